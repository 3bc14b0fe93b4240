"""Crashes lose nothing and send nothing twice: a killed pool child, a killed worker,
SIGTERM mid-send."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from tests.conftest import (
    MAX_RETRIES,
    TASK_TIME_LIMIT,
    VISIBILITY_TIMEOUT,
    Stack,
    service_env,
)
from tests.faults import child_running, control_app, kill_child_running
from tests.procs import Proc, RedisServer, start_api, start_worker, wait_for
from tests.smtp_sink import SmtpSink
from tests.test_smtp_outcomes import _address, _follow, _post

CRASH_DB = 3


@pytest.fixture
def control(stack: Stack) -> Iterator[Celery]:
    app = control_app(stack.env["CELERY_BROKER_URL"])
    yield app
    app.close()


def test_killed_pool_child_is_retried_and_the_mail_arrives_once(
    stack: Stack, control: Celery
) -> None:
    to = _address("oom")
    stall = stack.smtp.stall_at_rcpt(to)
    with stack.client() as client:
        task_id = _post(client, to)
        wait_for(lambda: stall.waiting == 1, what="the send to be in flight")
        kill_child_running(control, task_id)
        stall.release.set()
        seen = _follow(client, task_id)
    final = seen[-1]
    assert final["status"] == "SUCCESS", seen
    assert final["retries"] == 1
    assert len(stack.smtp.received_by(to)) == 1
    assert stack.worker.alive()


def test_a_mail_that_keeps_killing_its_process_fails_after_max_retries(
    stack: Stack, control: Celery
) -> None:
    to = _address("poison")
    stall = stack.smtp.stall_at_rcpt(to)
    with stack.client() as client:
        task_id = _post(client, to)
        for attempt in range(MAX_RETRIES + 1):
            wait_for(lambda: stall.waiting == 1, what=f"attempt {attempt} in flight")
            kill_child_running(control, task_id)
            wait_for(lambda: stall.waiting == 0, what=f"attempt {attempt} to be gone")
        final = _follow(client, task_id)[-1]
    stall.release.set()
    assert final["status"] == "FAILURE", final
    assert final["error"]["type"] == "WorkerLostError"
    assert final["retries"] == MAX_RETRIES
    assert stack.smtp.received_by(to) == []
    assert stack.worker.alive()


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
    control = control_app(crash_stack.env["CELERY_BROKER_URL"])
    try:
        with crash_stack.client() as client:
            task_id = _post(client, to)
            wait_for(lambda: stall.waiting == 1, what="the mail to be accepted")
            assert len(crash_stack.smtp.received_by(to)) == 1
            # The server's 250 is in, so the SUCCESS is stored with the delivery mark.
            assert _follow(client, task_id)[-1]["status"] == "SUCCESS"
            kill_child_running(control, task_id)
            stall.release.set()
            final: dict[str, Any] = {}

            # The attempt that was killed runs again, finds the mark and sends nothing.
            def ran_again() -> bool:
                status = client.get(f"/task-status/{task_id}").json()
                assert status["status"] == "SUCCESS", status
                final.update(status)
                return bool(status["retries"] == 1)

            wait_for(ran_again, timeout=40, what="the killed attempt to run again")
    finally:
        control.close()
        worker.stop()
    assert final["result"]["message_id"] == f"<{task_id}@example.org>"
    assert len(crash_stack.smtp.received_by(to)) == 1
