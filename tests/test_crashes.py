"""Crashes lose nothing and send nothing twice: a worker node killed at the moments that
matter (fault injection: worker_service.faults), mid-send, after the relay's 250, a
mail whose worker keeps dying, SIGTERM mid-send, Redis restarted before the delivery is
recorded."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.conftest import (
    TASK_TIME_LIMIT,
    VISIBILITY_TIMEOUT,
    Stack,
    service_env,
)
from tests.faults import child_running, control_app
from tests.procs import Proc, RedisServer, start_api, start_worker, wait_for
from tests.smtp_sink import SmtpSink
from tests.test_smtp_outcomes import _address, _follow, _post

pytestmark = pytest.mark.integration

CRASH_DB = 3


@pytest.fixture
def control(stack: Stack) -> Iterator[Celery]:
    app = control_app(stack.env["CELERY_BROKER_URL"])
    yield app
    app.close()


@dataclass
class CrashStack:
    """An API and a Redis database of their own, with workers the tests start and kill."""

    base_url: str
    env: dict[str, str]
    smtp: SmtpSink
    log_dir: Path

    def client(self) -> httpx.Client:
        key = self.env["API_KEYS"].split(",")[0].strip()
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )

    def worker(self, name: str, **env: str) -> Proc:
        node = f"{name}-{uuid.uuid4().hex[:6]}"
        return start_worker(node, {**self.env, **env}, self.log_dir, 1)


@pytest.fixture(scope="module")
def crash_stack(redis_server: RedisServer, smtp: SmtpSink, log_dir: Path) -> Iterator[CrashStack]:
    env = service_env(redis_server, smtp, db=CRASH_DB)
    api, base_url = start_api(env, log_dir, name="crash-api")
    yield CrashStack(base_url, env, smtp, log_dir)
    api.stop()


def test_worker_killed_mid_send_is_redelivered_to_another_within_the_timeout(
    crash_stack: CrashStack,
) -> None:
    to = _address("container-crash")
    stall = crash_stack.smtp.stall_at_rcpt(to)
    first = crash_stack.worker("doomed")
    with crash_stack.client() as client:
        task_id = _post(client, to)
        wait_for(lambda: stall.waiting == 1, what="the send to be in flight")
        os.killpg(first.popen.pid, signal.SIGKILL)  # the whole container: main + pool
        first.popen.wait()
        killed_at = time.monotonic()
        stall.release.set()
        second = crash_stack.worker("survivor")
        try:
            bound = VISIBILITY_TIMEOUT + 15
            wait_for(
                lambda: len(crash_stack.smtp.received_by(to)) == 1,
                timeout=bound,
                what=f"redelivery within CELERY_VISIBILITY_TIMEOUT + 15 = {bound}s",
            )
            final = _follow(client, task_id)[-1]
        finally:
            second.stop()
    assert time.monotonic() - killed_at <= VISIBILITY_TIMEOUT + 15
    assert final["status"] == "SUCCESS", final
    assert len(crash_stack.smtp.received_by(to)) == 1


def test_sigterm_lets_an_in_flight_send_finish(crash_stack: CrashStack) -> None:
    to = _address("drain")
    stall = crash_stack.smtp.stall_at_rcpt(to)
    worker = crash_stack.worker("draining")
    with crash_stack.client() as client:
        task_id = _post(client, to)
        wait_for(lambda: stall.waiting == 1, what="the send to be in flight")
        worker.popen.send_signal(signal.SIGTERM)  # what `docker stop` sends
        time.sleep(0.5)  # the server stays slow for a moment into the shutdown
        stall.release.set()
        worker.popen.wait(timeout=TASK_TIME_LIMIT + 10)
        final = _follow(client, task_id, timeout=5)[-1]
    assert final["status"] == "SUCCESS", (final, worker.log()[-3000:])
    assert final["retries"] == 0
    assert len(crash_stack.smtp.received_by(to)) == 1


def test_sigterm_requeues_a_send_that_cannot_finish_in_the_grace_period(
    crash_stack: CrashStack,
) -> None:
    to = _address("cut-off")
    stall = crash_stack.smtp.stall_at_rcpt(to)
    worker = crash_stack.worker("stopping")
    with crash_stack.client() as client:
        task_id = _post(client, to)
        wait_for(lambda: stall.waiting == 1, what="the send to be in flight")
        control = control_app(crash_stack.env["CELERY_BROKER_URL"])
        child_running(control, task_id)
        control.close()
        worker.popen.send_signal(signal.SIGTERM)
        # The attempt runs into SMTP_TIMEOUT, schedules its retry and the worker exits.
        worker.popen.wait(timeout=TASK_TIME_LIMIT + 10)
        stall.release.set()
        assert crash_stack.smtp.received_by(to) == []
        # Back in the queue at once, not after the visibility timeout.
        replacement = crash_stack.worker("replacement")
        try:
            final = _follow(client, task_id, timeout=VISIBILITY_TIMEOUT - 2)[-1]
        finally:
            replacement.stop()
    assert final["status"] == "SUCCESS", (final, worker.log()[-3000:])
    assert len(crash_stack.smtp.received_by(to)) == 1


def test_redelivery_after_the_server_accepted_the_mail_does_not_send_it_again(
    crash_stack: CrashStack,
) -> None:
    to = _address("accepted-then-crash")
    stall = crash_stack.smtp.stall_at_quit(to)
    # One session per mail, so the session is held at QUIT after the server's 250:
    # the moment between "the mail is out" and "the task is done".
    worker = crash_stack.worker("ledger", SMTP_KEEPALIVE="0")
    with crash_stack.client() as client:
        task_id = _post(client, to)
        wait_for(lambda: stall.waiting == 1, what="the mail to be accepted")
        assert len(crash_stack.smtp.received_by(to)) == 1
        # The server's 250 is in, so the SUCCESS is stored with the delivery mark.
        assert _follow(client, task_id)[-1]["status"] == "SUCCESS"
        _kill_node(worker)
        stall.release.set()
        # The message comes back past the visibility timeout; the attempt finds the
        # mark and sends nothing.
        survivor = crash_stack.worker("after-ledger")
        try:
            wait_for(
                lambda: "was delivered before" in survivor.log(),
                timeout=VISIBILITY_TIMEOUT + 15,
                what="the killed attempt to run again",
            )
            final = _follow(client, task_id)[-1]
        finally:
            survivor.stop()
    assert final["status"] == "SUCCESS", final
    assert final["result"]["message_id"] == f"<{task_id}@example.org>"
    assert len(crash_stack.smtp.received_by(to)) == 1


def _kill_node(worker: Proc) -> None:
    """SIGKILL the whole node (its process group): a container crash."""
    os.killpg(worker.popen.pid, signal.SIGKILL)
    worker.popen.wait()


def test_a_node_killed_as_its_wait_is_rung_leaves_the_message_queued(
    crash_stack: CrashStack,
) -> None:
    """The idle wait takes nothing: a node killed the moment a push wakes it leaves the
    message in its queue, and another node sends it at once."""
    to = _address("killed-on-wake")
    doomed = crash_stack.worker("woken", WORKER_FAULT_INJECTION="woken:kill")
    with crash_stack.client() as client:
        task_id = _post(client, to)
        doomed.popen.wait(timeout=10)
        assert crash_stack.smtp.received_by(to) == []
        survivor = crash_stack.worker("after-wake")
        try:
            final = _follow(client, task_id, timeout=VISIBILITY_TIMEOUT - 2)[-1]
        finally:
            survivor.stop()
    assert final["status"] == "SUCCESS", final
    assert len(crash_stack.smtp.received_by(to)) == 1


def test_a_node_killed_between_taking_a_message_and_running_it_loses_nothing(
    crash_stack: CrashStack,
) -> None:
    """Taken and recorded as unacked in one step: killed right after, the message comes
    back past the visibility timeout and is sent once."""
    to = _address("killed-after-fetch")
    doomed = crash_stack.worker("fetched", WORKER_FAULT_INJECTION="fetched:kill")
    with crash_stack.client() as client:
        task_id = _post(client, to)
        doomed.popen.wait(timeout=10)
        killed_at = time.monotonic()
        survivor = crash_stack.worker("after-fetch")
        try:
            wait_for(
                lambda: len(crash_stack.smtp.received_by(to)) == 1,
                timeout=VISIBILITY_TIMEOUT + 15,
                what="the message to come back and be sent",
            )
            final = _follow(client, task_id)[-1]
        finally:
            survivor.stop()
    assert time.monotonic() - killed_at <= VISIBILITY_TIMEOUT + 15
    assert final["status"] == "SUCCESS", final
    assert len(crash_stack.smtp.received_by(to)) == 1


def test_a_mail_whose_worker_keeps_dying_fails_after_max_retries(crash_stack: CrashStack) -> None:
    """Each attempt's node is killed mid-send: after EMAIL_MAX_RETRIES + 1 lost attempts
    the task fails with the reason, instead of coming back for ever."""
    to = _address("poison")
    stall = crash_stack.smtp.stall_at_rcpt(to)
    # Short limits, so each lost attempt comes back within seconds.
    quick = {
        "EMAIL_MAX_RETRIES": "1",
        "TASK_TIME_LIMIT": "2",
        "EMAIL_RETRY_MAX_DELAY": "1",
        "CELERY_VISIBILITY_TIMEOUT": "4",
    }
    with crash_stack.client() as client:
        task_id = _post(client, to)
        for attempt in range(2):
            worker = crash_stack.worker(f"poison-{attempt}", **quick)
            wait_for(lambda: stall.waiting == 1, timeout=30, what=f"attempt {attempt} in flight")
            _kill_node(worker)
            wait_for(lambda: stall.waiting == 0, what=f"attempt {attempt} to be gone")
        last = crash_stack.worker("poison-last", **quick)
        try:
            final = _follow(client, task_id, timeout=30)[-1]
        finally:
            last.stop()
    stall.release.set()
    assert final["status"] == "FAILURE", final
    assert final["error"]["type"] == "AttemptsLost"
    assert "lost in 2 attempts" in final["error"]["message"]
    assert crash_stack.smtp.received_by(to) == []


def test_redis_restarting_between_the_relays_250_and_the_record_sends_once(
    smtp: SmtpSink, log_dir: Path
) -> None:
    """The delivery's record is written through a Redis restart, so the mail is not
    forgotten as sent and never goes out twice."""
    own_redis = RedisServer(log_dir)
    env = service_env(own_redis, smtp, db=0)
    flag = log_dir / f"paused-{uuid.uuid4().hex[:6]}"
    api, base_url = start_api(env, log_dir, name="restart-api")
    worker = start_worker(
        f"restart-{uuid.uuid4().hex[:6]}",
        {**env, "WORKER_FAULT_INJECTION": f"accepted:pause:{flag}"},
        log_dir,
    )
    to = _address("redis-restart")
    try:
        key = env["API_KEYS"].split(",")[0].strip()
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
        ) as client:
            task_id = _post(client, to)
            wait_for(flag.exists, what="the relay's 250, before the record")
            assert len(smtp.received_by(to)) == 1
            own_redis.proc.stop()  # SIGTERM: Redis writes its AOF and exits
            flag.unlink()  # the worker now tries to record the delivery
            wait_for(
                lambda: "trying again until the attempt's limit" in worker.log(),
                what="the record's write to fail and be tried again",
            )
            own_redis.start()
            wait_for(
                lambda: client.get(f"/task-status/{task_id}").status_code == 200,
                what="the API to read from Redis again",
            )
            final = _follow(client, task_id, timeout=30)[-1]
        assert final["status"] == "SUCCESS", (final, worker.log()[-3000:])
        # The mark a redelivered copy would find before sending.
        assert own_redis.client.exists(f"email-dispatch:delivered:{task_id}")
        assert len(smtp.received_by(to)) == 1
    finally:
        flag.unlink(missing_ok=True)
        worker.stop()
        api.stop()
        own_redis.stop()
