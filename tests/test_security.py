"""Locked down: JSON only, rate limits, no stack traces, no secrets anywhere."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from celery import Celery

from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL
from tests.conftest import API_KEY, OTHER_API_KEY, QUIET_DB, Stack, service_env
from tests.faults import forge_submission
from tests.procs import RedisServer, free_port, start_api, start_worker, wait_for
from tests.smtp_sink import RecordingHandler, SmtpSink
from tests.test_end_to_end import unique_subject, wait_until_finished

pytestmark = pytest.mark.integration


class _Unpickled:
    """Unpickling this creates a directory: proof that a worker ran pickle data."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_a_pickle_message_is_refused_runs_nothing_and_the_worker_goes_on(
    stack: Stack, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    producer = Celery("attacker", broker=stack.env["CELERY_BROKER_URL"], set_as_current=False)
    producer.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    producer.send_task(SEND_EMAIL, kwargs={"email": _Unpickled(str(marker))}, queue=EMAIL_QUEUE)
    producer.close()
    wait_for(lambda: "ContentDisallowed" in stack.worker.log(), what="the worker to refuse it")
    assert not marker.exists(), "the worker unpickled the message"
    _still_serving(stack)


def test_a_message_of_another_content_type_is_refused(stack: Stack) -> None:
    task_id = str(uuid.uuid4())
    body = base64.b64encode(b"email: {to: a@example.com}").decode()
    message = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/x-yaml",
        "headers": {"lang": "py", "task": SEND_EMAIL, "id": task_id, "root_id": task_id},
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": EMAIL_QUEUE, "routing_key": EMAIL_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    client = redis.Redis.from_url(stack.env["CELERY_BROKER_URL"])
    client.lpush(EMAIL_QUEUE, json.dumps(message))
    client.close()
    wait_for(lambda: "application/x-yaml" in stack.worker.log(), what="the worker to refuse yaml")
    _still_serving(stack)


def _still_serving(stack: Stack) -> None:
    assert stack.worker.alive()
    with stack.client() as client:
        response = client.post(
            "/send-email", json={"to": "after@example.com", "subject": "after", "body": "x"}
        )
        assert wait_until_finished(client, response.json()["task_id"])["status"] == "SUCCESS"


@pytest.fixture(scope="module")
def limited_api(redis_server: RedisServer, smtp: SmtpSink, log_dir: Path) -> Iterator[str]:
    env = {**service_env(redis_server, smtp, db=QUIET_DB), "RATE_LIMIT_PER_MINUTE": "3"}
    api, base_url = start_api(env, log_dir, name="limited-api")
    yield base_url
    api.stop()


def test_rate_limit_answers_429_with_retry_after_per_key(
    limited_api: str, redis_server: RedisServer
) -> None:
    queue = redis.Redis(port=redis_server.port, db=QUIET_DB)
    mail = {"to": "r@example.com", "subject": "rate", "body": "x"}
    try:
        with httpx.Client(base_url=limited_api) as client:
            auth = {"Authorization": f"Bearer {API_KEY}"}
            answers = [client.post("/send-email", json=mail, headers=auth) for _ in range(5)]
            assert [a.status_code for a in answers].count(202) == 3
            refused = [a for a in answers if a.status_code == 429]
            assert refused, [a.status_code for a in answers]
            assert 1 <= int(refused[0].headers["Retry-After"]) <= 61
            assert "slow down" in refused[0].json()["detail"]
            assert queue.llen(EMAIL_QUEUE) == 3, "a refused submission was queued"
            other = {"Authorization": f"Bearer {OTHER_API_KEY}"}
            assert client.post("/send-email", json=mail, headers=other).status_code == 202
    finally:
        queue.flushdb()
        queue.close()


def test_body_text_over_its_limit_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/send-email", json={"to": "a@example.com", "subject": "s", "body": "x" * 600_000}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "body"]


def test_an_internal_error_answers_500_without_a_stack_trace(stack: Stack) -> None:
    task_id = forge_submission(stack.env["CELERY_RESULT_BACKEND"], SEND_EMAIL, API_KEY)
    client = redis.Redis.from_url(stack.env["CELERY_RESULT_BACKEND"])
    client.set(f"celery-task-meta-{task_id}", "{corrupt")
    client.close()
    with stack.client() as http:
        response = http.get(f"/task-status/{task_id}")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; it has been logged"}
    assert "Traceback" not in response.text
    assert "JSONDecodeError" in stack.api.log(), "the error should be in the log"


class _AuthSink(SmtpSink):
    """The test SMTP server, requiring AUTH LOGIN/PLAIN with one user."""

    def __init__(self, user: str, password: str) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                user.encode(),
                password.encode(),
            )
            return AuthResult(success=ok)

        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=False,
        )
        self._controller.start()


def test_smtp_login_works_and_no_secret_leaks(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> None:
    password = f"smtp-{uuid.uuid4().hex}"
    sink = _AuthSink("mailer", password)
    env = {
        **service_env(redis_server, smtp, db=7),
        "SMTP_PORT": str(sink.port),
        "SMTP_USERNAME": "mailer",
        "SMTP_PASSWORD": password,
    }
    worker = start_worker("auth-worker", env, log_dir, 1)
    api, base_url = start_api(env, log_dir, name="auth-api")
    try:
        subject = unique_subject("authenticated")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=15) as client:
            response = client.post(
                "/send-email", json={"to": "a@example.com", "subject": subject, "body": "x"}
            )
            status = wait_until_finished(client, response.json()["task_id"])
            docs = client.get("/openapi.json").text + client.get("/docs").text
            client.get(f"/task-status/{uuid.uuid4()}", headers={"Authorization": "Bearer bad"})
        assert status["status"] == "SUCCESS", status
        sink.wait_for_messages(1, Subject=subject)
        everything = worker.log() + api.log() + docs + json.dumps(status)
        for secret in (password, API_KEY, OTHER_API_KEY):
            assert secret not in everything
    finally:
        api.stop()
        worker.stop()
        sink.stop()
