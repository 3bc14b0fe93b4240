"""Scheduled sending: a mail with ``send_at`` waits in the due-time index as SCHEDULED, and
goes out within a second of its time, once, whichever worker nodes promote it and
however they restart (docs/design.md, "Scheduling and cancel")."""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import redis

from shared_schemas import records
from shared_schemas.schedule import DUE_KEY, DUE_MESSAGES_KEY
from tests.conftest import API_KEY, QuietApi, Stack, service_env
from tests.procs import Proc, RedisServer, start_api, start_worker, wait_for
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

SCHEDULE_DB = 8
# Offsets other than UTC's, to show the offset is honoured.
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE_THIRTY = timezone(-timedelta(hours=5, minutes=30))


def _address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def _schedule(client: httpx.Client, to: str, send_at: datetime | str) -> httpx.Response:
    when = send_at.isoformat() if isinstance(send_at, datetime) else send_at
    return client.post(
        "/send-email", json={"to": to, "subject": f"to {to}", "body": "x", "send_at": when}
    )


def _scheduled(client: httpx.Client, to: str, send_at: datetime) -> str:
    response = _schedule(client, to, send_at)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "SCHEDULED"
    task_id: str = response.json()["task_id"]
    return task_id


def _status(client: httpx.Client, task_id: str) -> dict[str, object]:
    response = client.get(f"/task-status/{task_id}")
    assert response.status_code == 200, response.text
    status: dict[str, object] = response.json()
    return status


def test_a_scheduled_mail_is_scheduled_then_sent_within_a_second_of_send_at(
    stack: Stack,
) -> None:
    # Wall clock and monotonic clock together: send_at is wall time, the sink's
    # receive times monotonic (one machine, one clock for Redis, workers and sink).
    wall0, mono0 = time.time(), time.monotonic()
    first = datetime.now(UTC) + timedelta(seconds=2)
    mails: list[tuple[str, str, datetime]] = []
    with stack.client() as client:
        for i in range(20):
            send_at = (first + timedelta(milliseconds=97 * i)).astimezone(
                PLUS_TWO if i % 2 else MINUS_FIVE_THIRTY
            )
            to = _address(f"scheduled-{i}")
            mails.append((_scheduled(client, to, send_at), to, send_at))
        task_id, _, send_at = mails[-1]
        status = _status(client, task_id)
        assert status["status"] == "SCHEDULED", status
        assert datetime.fromisoformat(str(status["send_at"])) == send_at
        assert status["send_at"] == send_at.isoformat()  # as given, offset and all
        assert not any(stack.smtp.received_by(to) for _, to, _ in mails)

        wait_for(
            lambda: all(stack.smtp.received_by(to) for _, to, _ in mails),
            timeout=30,
            what="every scheduled mail to arrive",
        )
        lateness = []
        for _, to, send_at in mails:
            [received] = stack.smtp.received_by(to)
            due = send_at.timestamp() - wall0
            lateness.append(received.at - mono0 - due)
        final = _status(client, mails[0][0])

    lateness.sort()
    p50 = statistics.median(lateness)
    p99 = statistics.quantiles(lateness, n=100, method="inclusive")[98]
    print(
        f"\nscheduled lateness over {len(lateness)} mails: min {lateness[0] * 1000:.1f} ms, "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {lateness[-1] * 1000:.1f} ms"
    )
    # Never early (5 ms for the two clocks' reading), and within a second.
    assert lateness[0] > -0.005, lateness
    assert p99 < 1.0, lateness
    assert final["status"] == "SUCCESS", final
    assert final["send_at"] == mails[0][2].isoformat()


def test_a_send_at_in_the_past_sends_now(stack: Stack) -> None:
    to = _address("past")
    send_at = datetime.now(UTC) - timedelta(hours=3)
    with stack.client() as client:
        response = _schedule(client, to, send_at)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "PENDING"
        wait_for(lambda: stack.smtp.received_by(to), what="the mail to go out now")
        task_id = response.json()["task_id"]
        wait_for(lambda: _status(client, task_id)["status"] == "SUCCESS", what="SUCCESS")
        shown = datetime.fromisoformat(str(_status(client, task_id)["send_at"]))
        assert shown == send_at


@pytest.mark.parametrize(
    ("send_at", "problem"),
    [
        ("2026-11-22T10:00:00", "rfc3339_offset"),  # no offset
        (
            lambda: (datetime.now(UTC) + timedelta(days=30, minutes=5)).isoformat(),
            "send_at_too_far",
        ),
        ("2026-11-22", "rfc3339"),
        ("2026-11-22T10:00+01:00", "rfc3339"),  # no seconds
        (1_800_000_000, "rfc3339"),  # a number is no RFC 3339 time
        ("2026-02-30T10:00:00Z", "datetime_from_date_parsing"),
    ],
)
def test_a_bad_send_at_is_refused_precisely_and_queues_nothing(
    quiet_api: QuietApi, send_at: object, problem: str
) -> None:
    value = send_at() if callable(send_at) else send_at
    before = _stored(quiet_api.redis)
    with quiet_api.client() as client:
        response = client.post(
            "/send-email",
            json={"to": "a@example.com", "subject": "s", "body": "x", "send_at": value},
        )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "send_at"], error
    assert error["type"] == problem, error
    assert _stored(quiet_api.redis) == before


def test_thirty_days_ahead_is_accepted(quiet_api: QuietApi) -> None:
    send_at = datetime.now(UTC) + timedelta(days=30) - timedelta(minutes=1)
    with quiet_api.client() as client:
        task_id = _scheduled(client, _address("far"), send_at)
        status = _status(client, task_id)
    assert status["status"] == "SCHEDULED"
    score = quiet_api.redis.zscore(DUE_KEY, task_id)
    assert score == int(send_at.timestamp() * 1000)
    # The record outlives the wait, then the result (RESULT_TTL, a day here).
    ttl = quiet_api.redis.ttl(records.record_key(task_id))
    assert ttl > timedelta(days=30).total_seconds(), ttl


def _stored(client: redis.Redis) -> tuple[int, int, int, int]:
    """What a submission would have changed: the queue, the index, the records."""
    records_count = sum(1 for _ in client.scan_iter(match=f"{records.KEY_PREFIX}*", count=1000))
    return (
        int(client.llen("email")),
        int(client.zcard(DUE_KEY)),
        int(client.hlen(DUE_MESSAGES_KEY)),
        records_count,
    )


@dataclass
class ScheduleStack:
    """An API and a Redis database of their own, with worker nodes the tests start."""

    base_url: str
    env: dict[str, str]
    smtp: SmtpSink
    log_dir: Path
    redis: redis.Redis

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
        )

    def worker(self, name: str) -> Proc:
        return start_worker(f"{name}-{uuid.uuid4().hex[:6]}", self.env, self.log_dir, 4)


@pytest.fixture(scope="module")
def schedule_stack(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> Iterator[ScheduleStack]:
    env = service_env(redis_server, smtp, db=SCHEDULE_DB)
    api, base_url = start_api(env, log_dir, name="schedule-api")
    client = redis.Redis(port=redis_server.port, db=SCHEDULE_DB)
    yield ScheduleStack(base_url, env, smtp, log_dir, client)
    client.close()
    api.stop()


def test_two_nodes_promoting_send_each_scheduled_mail_once(schedule_stack: ScheduleStack) -> None:
    nodes = [schedule_stack.worker("promoter-a"), schedule_stack.worker("promoter-b")]
    try:
        due = datetime.now(UTC) + timedelta(seconds=2)
        addresses = [_address(f"twice-{i}") for i in range(40)]
        with schedule_stack.client() as client:
            # Half due at one instant (both promoters race for them), half spread out.
            task_ids = [
                _scheduled(client, to, due + timedelta(milliseconds=0 if i % 2 else 25 * i))
                for i, to in enumerate(addresses)
            ]
            wait_for(
                lambda: all(schedule_stack.smtp.received_by(to) for to in addresses),
                timeout=30,
                what="every scheduled mail to arrive",
            )
            wait_for(
                lambda: all(_status(client, t)["status"] == "SUCCESS" for t in task_ids),
                what="every task to succeed",
            )
        assert [len(schedule_stack.smtp.received_by(to)) for to in addresses] == [1] * 40
        # Promoted once: each task's message reached a node once. (The delivery ledger
        # would hide a second message from the sink, not from the nodes' logs.)
        logs = "".join(node.log() for node in nodes)
        received = [logs.count(f"Task email.send[{t}] received") for t in task_ids]
        assert received == [1] * 40
        assert schedule_stack.redis.zcard(DUE_KEY) == 0
        assert schedule_stack.redis.hlen(DUE_MESSAGES_KEY) == 0
    finally:
        for node in nodes:
            node.stop()


def test_scheduled_mails_survive_a_node_killed_while_they_wait(
    schedule_stack: ScheduleStack,
) -> None:
    node = schedule_stack.worker("doomed")
    due = datetime.now(UTC) + timedelta(seconds=3)
    addresses = [_address(f"survive-{i}") for i in range(10)]
    with schedule_stack.client() as client:
        task_ids = [_scheduled(client, to, due) for to in addresses]
        os.killpg(node.popen.pid, signal.SIGKILL)  # the whole node, no goodbye
        node.popen.wait()
        node.stop()
        # Due while no node runs: they wait in the index, in Redis.
        wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=0.5), what="send_at")
        assert schedule_stack.redis.zcard(DUE_KEY) == 10
        assert {_status(client, t)["status"] for t in task_ids} == {"SCHEDULED"}
        restarted = schedule_stack.worker("restarted")
        try:
            wait_for(
                lambda: all(_status(client, t)["status"] == "SUCCESS" for t in task_ids),
                what="every task to succeed after the restart",
            )
        finally:
            restarted.stop()
    assert [len(schedule_stack.smtp.received_by(to)) for to in addresses] == [1] * 10
