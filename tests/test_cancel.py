"""DELETE /tasks/{id}: a task that has not started is cancelled and never sent, even when a
worker has already fetched its message; one that runs or has finished is not
(docs/design.md, "Scheduling and cancel")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared_schemas.schedule import DUE_KEY, DUE_MESSAGES_KEY
from tests.conftest import OTHER_API_KEY, TASK_TIME_LIMIT, QuietApi, Stack, service_env
from tests.procs import Proc, RedisServer, start_api, start_worker, wait_for
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

RACE_DB = 9
RETRY_DB = 10


def _address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def _post(client: httpx.Client, to: str, **extra: Any) -> str:
    response = client.post("/send-email", json={"to": to, "subject": "s", "body": "x", **extra})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def _status(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/task-status/{task_id}")
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def _cancelled(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "REVOKED", body
    assert body["error"]["type"] == "Cancelled", body
    assert body["finished_at"] is not None
    return body


def test_a_scheduled_mail_cancelled_is_never_sent(stack: Stack) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    cancelled_to, control_to = _address("cancelled-scheduled"), _address("control")
    with stack.client() as client:
        task_id = _post(client, cancelled_to, send_at=due.isoformat())
        control = _post(client, control_to, send_at=due.isoformat())
        assert _status(client, task_id)["status"] == "SCHEDULED"
        body = _cancelled(client, task_id)
        assert datetime.fromisoformat(body["send_at"]) == due
        assert stack.redis.client.zscore(DUE_KEY, task_id) is None
        assert not stack.redis.client.hexists(DUE_MESSAGES_KEY, task_id)
        # The control, due at the same time, arrives; the cancelled one never does.
        wait_for(lambda: stack.smtp.received_by(control_to), what="the control mail")
        wait_for(lambda: _status(client, control)["status"] == "SUCCESS", what="SUCCESS")
        assert stack.smtp.received_by(cancelled_to) == []
        assert _status(client, task_id)["status"] == "REVOKED"


def test_a_pending_task_is_cancelled_once(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        task_id = _post(client, _address("pending"))
        assert _status(client, task_id)["status"] == "PENDING"
        body = _cancelled(client, task_id)
        assert body["started_at"] is None
        assert _status(client, task_id) == body
        again = client.delete(f"/tasks/{task_id}")
    assert again.status_code == 409, again.text
    assert "REVOKED" in again.json()["detail"]


def test_a_running_attempt_cannot_be_cancelled_nor_a_finished_task(stack: Stack) -> None:
    to = _address("running")
    stall = stack.smtp.stall_at_rcpt(to)
    with stack.client() as client:
        task_id = _post(client, to)
        wait_for(lambda: stall.waiting == 1, what="the send to be in flight")
        running = client.delete(f"/tasks/{task_id}")
        stall.release.set()
        assert running.status_code == 409, running.text
        assert "running" in running.json()["detail"]
        wait_for(lambda: _status(client, task_id)["status"] == "SUCCESS", what="SUCCESS")
        finished = client.delete(f"/tasks/{task_id}")
        assert finished.status_code == 409, finished.text
        assert "SUCCESS" in finished.json()["detail"]
        assert _status(client, task_id)["status"] == "SUCCESS"
    assert len(stack.smtp.received_by(to)) == 1


def test_unknown_or_foreign_ids_are_404_and_bad_ones_422(stack: Stack) -> None:
    with stack.client() as client:
        unknown = client.delete(f"/tasks/{uuid.uuid4()}")
        mine = _post(client, _address("mine"), send_at=_hour_ahead())
        malformed = client.delete("/tasks/not-a-uuid")
    with stack.client(OTHER_API_KEY) as other:
        foreign = other.delete(f"/tasks/{mine}")
    with httpx.Client(base_url=stack.base_url) as anonymous:
        unauthenticated = anonymous.delete(f"/tasks/{mine}")
    assert unknown.status_code == 404, unknown.text
    assert foreign.status_code == 404, foreign.text
    assert malformed.status_code == 422, malformed.text
    assert malformed.json()["detail"][0]["loc"] == ["path", "task_id"]
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["WWW-Authenticate"] == "Bearer"
    with stack.client() as client:  # none of them touched it
        assert _status(client, mine)["status"] == "SCHEDULED"
        _cancelled(client, mine)


def _hour_ahead() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


@pytest.fixture
def race_stack(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path, tmp_path: Path
) -> Iterator[tuple[Stack, Path]]:
    """An API and a worker node that stops in each task's before_start until told."""
    flag = tmp_path / "before-start"
    env = service_env(redis_server, smtp, db=RACE_DB)
    api, base_url = start_api(env, log_dir, name="race-api")
    worker = start_worker(
        f"paused-{uuid.uuid4().hex[:6]}",
        {**env, "WORKER_FAULT_INJECTION": f"before_start:pause:{flag}"},
        log_dir,
        1,
    )
    yield Stack(base_url, env, redis_server, smtp, api, worker, log_dir, 0), flag
    flag.unlink(missing_ok=True)
    worker.stop()
    api.stop()


def test_a_cancel_wins_over_a_worker_that_already_fetched_the_message(
    race_stack: tuple[Stack, Path],
) -> None:
    stack, flag = race_stack
    to = _address("fetched")
    broker = redis.Redis.from_url(stack.env["CELERY_BROKER_URL"])
    with stack.client() as client:
        task_id = _post(client, to)
        wait_for(flag.exists, what="the worker to hold the message, paused in before_start")
        assert broker.hlen("unacked") == 1  # fetched, not yet begun
        assert _status(client, task_id)["status"] == "PENDING"
        _cancelled(client, task_id)
        flag.unlink()  # the worker goes on: its attempt must not begin
        wait_for(
            lambda: f"task {task_id} was cancelled; not sending it" in stack.worker.log(),
            timeout=TASK_TIME_LIMIT,
            what="the worker to end the cancelled task",
        )
        wait_for(lambda: broker.hlen("unacked") == 0, what="the message to be acknowledged")
        status = _status(client, task_id)
    broker.close()
    assert status["status"] == "REVOKED", status
    assert status["started_at"] is None
    assert stack.smtp.rcpt_attempts(to) == 0
    assert stack.smtp.received_by(to) == []


@pytest.fixture
def retry_stack(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> Iterator[tuple[Stack, Proc]]:
    """Retries a few seconds apart, so a test can cancel one that is waiting."""
    env = {
        **service_env(redis_server, smtp, db=RETRY_DB),
        "EMAIL_RETRY_BASE_DELAY": "3",
        "EMAIL_RETRY_MAX_DELAY": "3",
    }
    api, base_url = start_api(env, log_dir, name="retry-api")
    worker = start_worker(f"retrying-{uuid.uuid4().hex[:6]}", env, log_dir, 2)
    yield Stack(base_url, env, redis_server, smtp, api, worker, log_dir, 0), worker
    worker.stop()
    api.stop()


def test_a_task_waiting_for_its_retry_is_cancelled_and_not_retried(
    retry_stack: tuple[Stack, Proc],
) -> None:
    stack, worker = retry_stack
    to = _address("greylisted")
    stack.smtp.reply_to_rcpt(to, "451 4.7.1 Greylisted, try again")
    with stack.client() as client:
        task_id = _post(client, to)
        wait_for(
            lambda: _status(client, task_id)["status"] == "RETRY",
            interval=0.01,
            what="the first attempt to fail and wait for its retry",
        )
        body = _cancelled(client, task_id)
        assert body["retries"] == 1
        wait_for(
            lambda: f"task {task_id} was cancelled; not sending it" in worker.log(),
            timeout=10,
            what="the retry's message to be refused",
        )
        assert _status(client, task_id)["status"] == "REVOKED"
    assert stack.smtp.rcpt_attempts(to) == 1  # the first attempt only
    assert stack.smtp.received_by(to) == []


def test_openapi_documents_cancel_and_send_at_with_examples(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        spec = client.get("/openapi.json").json()
    cancel = spec["paths"]["/tasks/{task_id}"]["delete"]
    assert cancel["security"] == [{"HTTPBearer": []}]
    assert cancel["parameters"][0]["schema"]["format"] == "uuid"
    responses = cancel["responses"]
    assert responses["200"]["content"]["application/json"]["example"]["status"] == "REVOKED"
    assert "example" in responses["404"]["content"]["application/json"]
    assert "example" in responses["409"]["content"]["application/json"]
    send_at = spec["components"]["schemas"]["SendEmailRequest"]["properties"]["send_at"]
    assert send_at["examples"]
    assert "30 days" in send_at["description"]
    states = spec["components"]["schemas"]["TaskState"]["enum"]
    assert "SCHEDULED" in states
