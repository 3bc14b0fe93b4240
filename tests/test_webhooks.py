"""Signed delivery events on real processes: redis-server, the shipped worker (serving
the email and webhooks queues), the SMTP sink, the API under uvicorn, and a real HTTP
receiver that verifies every event with the Standard Webhooks library."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, OTHER_API_KEY, QuietApi, service_env
from tests.procs import Proc, RedisServer, free_port, start_api, start_worker, wait_for
from tests.smtp_sink import REFUSED_PREFIX, SmtpSink
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

WEBHOOK_DB = 9
# An event's calls end this long after it: short, so giving up is seen in seconds.
MAX_AGE = 6


@dataclass
class HookStack:
    base_url: str
    api: Proc
    worker: Proc
    metrics_url: str

    def client(self, key: str = API_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.metrics_url, timeout=5).text
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
            if all(found.get(key) == value for key, value in labels.items()):
                return float(match.group(4))
        return 0.0


@pytest.fixture(scope="module")
def hooks(redis_server: RedisServer, smtp: SmtpSink, log_dir: Path) -> Iterator[HookStack]:
    env = {
        **service_env(redis_server, smtp, db=WEBHOOK_DB),
        # The receivers here listen on 127.0.0.1.
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "WEBHOOK_TIMEOUT": "3",
        "WEBHOOK_RETRY_BASE_DELAY": "0.2",
        "WEBHOOK_RETRY_MAX_DELAY": "1",
        "WEBHOOK_MAX_AGE": str(MAX_AGE),
    }
    metrics_port = free_port()
    # The shipped command: no -Q, so it serves the email and the webhooks queues.
    worker = start_worker(
        "hooks-worker", {**env, "WORKER_METRICS_PORT": str(metrics_port)}, log_dir
    )
    api, base_url = start_api(env, log_dir, name="hooks-api")
    yield HookStack(base_url, api, worker, f"http://127.0.0.1:{metrics_port}/metrics")
    api.stop()
    worker.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def _register(client: httpx.Client, receiver: Receiver) -> str:
    response = client.put("/webhook", json={"url": receiver.url})
    assert response.status_code in (200, 201), response.text
    secret: str = response.json()["secret"]
    receiver.secret = secret
    return secret


def _send(client: httpx.Client, to: str = "hook@example.com", **extra: object) -> str:
    mail = {"to": to, "subject": "hooked", "body": "x", **extra}
    response = client.post("/send-email", json=mail)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def test_register_show_change_and_remove(hooks: HookStack) -> None:
    with hooks.client(OTHER_API_KEY) as client:
        client.delete("/webhook")  # a clean start for this key
        assert client.get("/webhook").status_code == 404
        first = client.put("/webhook", json={"url": "http://127.0.0.1:9/one"})
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["url"] == "http://127.0.0.1:9/one"
        assert body["secret"].startswith("whsec_")
        assert body["events"] == ["email.delivered", "email.failed", "email.cancelled"]
        assert client.get("/webhook").json() == body

        moved = client.put("/webhook", json={"url": "http://127.0.0.1:9/two"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["secret"] == body["secret"]  # kept across a URL change
        assert moved.json()["created_at"] == body["created_at"]
        assert client.get("/webhook").json()["url"] == "http://127.0.0.1:9/two"

        assert client.delete("/webhook").status_code == 204
        assert client.get("/webhook").status_code == 404
        assert client.delete("/webhook").status_code == 404
        fresh = client.put("/webhook", json={"url": "http://127.0.0.1:9/three"})
        assert fresh.status_code == 201
        assert fresh.json()["secret"] != body["secret"]  # a new secret after a DELETE
        client.delete("/webhook")
    # One endpoint per key: the other key sees none of it.
    with hooks.client(API_KEY) as client:
        shown = client.get("/webhook")
        assert shown.status_code == 404 or shown.json()["url"] != "http://127.0.0.1:9/three"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "https:// or http://"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "credentials"),
        ({"url": "http://127.0.0.1/x#frag"}, "fragment"),
        ({"url": "http://no-such-host.invalid/x"}, "does not resolve"),
        ({"url": "http://127.0.0.1/x", "secret": "mine"}, "Extra inputs"),
        ({}, "Field required"),
    ],
)
def test_bad_registrations_get_a_precise_422_and_change_nothing(
    hooks: HookStack, payload: dict[str, str], words: str
) -> None:
    with hooks.client(OTHER_API_KEY) as client:
        client.put("/webhook", json={"url": "http://127.0.0.1:9/kept"})
        before = client.get("/webhook").json()
        response = client.put("/webhook", json=payload)
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"][0] == "body"
        assert words in problem["msg"], problem
        assert client.get("/webhook").json() == before
        client.delete("/webhook")


def test_the_webhook_needs_an_api_key(hooks: HookStack) -> None:
    with httpx.Client(base_url=hooks.base_url) as client:
        for method in ("GET", "PUT", "DELETE"):
            response = client.request(method, "/webhook", json={"url": "http://127.0.0.1:9/"})
            assert response.status_code == 401, (method, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.8/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_addresses_are_refused_when_not_allowed(quiet_api: QuietApi, url: str) -> None:
    with quiet_api.client() as client:
        response = client.put("/webhook", json={"url": url})
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["body", "url"]
        assert "public addresses only" in problem["msg"]
        assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in problem["msg"]
        assert client.get("/webhook").status_code == 404


def test_a_delivered_mail_is_announced_signed(hooks: HookStack, receiver: Receiver) -> None:
    with hooks.client() as client:
        secret = _register(client, receiver)
        task_id = _send(client, tags=["receipt"], metadata={"order": "A-1"})
        wait_for(lambda: receiver.events_for(task_id), timeout=30, what="email.delivered")
        status = client.get(f"/task-status/{task_id}").json()
    [got] = receiver.events_for(task_id)
    assert got.verified, "the Standard Webhooks library refused the signature"
    assert secret.startswith("whsec_")
    assert got.path == "/hooks/email"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.event is not None
    assert got.event["type"] == "email.delivered"
    data = got.event["data"]
    assert data["task_id"] == task_id
    assert data["task"] == "email.send"
    assert data["status"] == "SUCCESS"
    assert data["tags"] == ["receipt"]
    assert data["metadata"] == {"order": "A-1"}
    assert data["error"] is None
    assert data["result"]["message_id"] == status["result"]["message_id"]
    assert data["result"]["accepted"] == ["hook@example.com"]
    assert status["status"] == "SUCCESS"  # the event changed nothing of the mail's own


def test_a_failed_mail_is_announced(hooks: HookStack, receiver: Receiver) -> None:
    with hooks.client() as client:
        _register(client, receiver)
        task_id = _send(client, to=f"{REFUSED_PREFIX}{uuid.uuid4().hex[:6]}@example.com")
        wait_for(lambda: receiver.events_for(task_id), timeout=30, what="email.failed")
        status = client.get(f"/task-status/{task_id}").json()
    [got] = receiver.events_for(task_id)
    assert got.verified
    assert got.event is not None
    assert got.event["type"] == "email.failed"
    data = got.event["data"]
    assert (data["status"], data["result"]) == ("FAILURE", None)
    assert data["error"] == status["error"]
    assert data["error"]["type"] == "PermanentDeliveryError"


def test_a_cancelled_mail_is_announced_by_the_api(hooks: HookStack, receiver: Receiver) -> None:
    with hooks.client() as client:
        _register(client, receiver)
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
        task_id = _send(client, send_at=tomorrow, tags=["later"])
        assert client.get(f"/task-status/{task_id}").json()["status"] == "SCHEDULED"
        cancelled = client.delete(f"/tasks/{task_id}")
        assert cancelled.status_code == 200, cancelled.text
        wait_for(lambda: receiver.events_for(task_id), timeout=30, what="email.cancelled")
    [got] = receiver.events_for(task_id)
    assert got.verified
    assert got.event is not None
    assert got.event["type"] == "email.cancelled"
    data = got.event["data"]
    assert (data["status"], data["tags"], data["result"]) == ("REVOKED", ["later"], None)
    assert data["error"]["type"] == "Cancelled"


def test_a_receiver_that_is_down_gets_the_event_when_it_is_back(hooks: HookStack) -> None:
    receiver = Receiver()  # not listening yet
    failed_before = hooks.metric("email_dispatch_webhook_deliveries_total", outcome="failed")
    try:
        with hooks.client() as client:
            _register(client, receiver)
            task_id = _send(client)
            wait_for(
                lambda: (
                    hooks.metric("email_dispatch_webhook_deliveries_total", outcome="failed")
                    > failed_before
                ),
                timeout=30,
                what="a failed call to the receiver that is down",
            )
            receiver.start()
            wait_for(lambda: receiver.events_for(task_id), timeout=MAX_AGE, what="the retry")
        [got] = receiver.events_for(task_id)
        assert got.verified
    finally:
        receiver.stop()


def test_an_event_is_given_up_after_the_max_age_and_counted(hooks: HookStack) -> None:
    down = Receiver()  # never started
    metric = "email_dispatch_webhook_events_failed_total"
    before = hooks.metric(metric, event="email.delivered")
    with hooks.client() as client:
        _register(client, down)
        _send(client)
        wait_for(
            lambda: hooks.metric(metric, event="email.delivered") > before,
            timeout=MAX_AGE + 20,
            what="the event to be given up",
        )
        client.delete("/webhook")
    assert "given up after" in hooks.worker.log()


def test_a_removed_endpoint_gets_nothing(hooks: HookStack, receiver: Receiver) -> None:
    dropped = "email_dispatch_webhook_deliveries_total"
    with hooks.client() as client:
        _register(client, receiver)
        receiver.answers.extend([503, 503, 503])  # keeps the event waiting for a retry
        task_id = _send(client)
        wait_for(lambda: receiver.events_for(task_id), timeout=30, what="the first call")
        before = hooks.metric(dropped, outcome="dropped")
        assert client.delete("/webhook").status_code == 204
        wait_for(
            lambda: hooks.metric(dropped, outcome="dropped") > before,
            timeout=MAX_AGE + 5,
            what="the pending event to be dropped",
        )
    assert len(receiver.events_for(task_id)) == 1


def test_the_webhook_routes_are_documented_with_examples(quiet_api: QuietApi) -> None:
    with httpx.Client(base_url=quiet_api.base_url) as client:
        spec = client.get("/openapi.json").json()
    operations = spec["paths"]["/webhook"]
    assert set(operations) == {"put", "get", "delete"}
    for operation in operations.values():
        assert operation["security"] == [{"HTTPBearer": []}]
        assert "401" in operation["responses"]
    put = operations["put"]
    assert {"200", "201", "422"} <= set(put["responses"])
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/WebhookRegistration"}
    schemas = spec["components"]["schemas"]
    assert schemas["WebhookRegistration"]["examples"] == [
        {"url": "https://hooks.example.com/email-events"}
    ]
    [example] = schemas["WebhookEndpoint"]["examples"]
    assert example["secret"].startswith("whsec_")
    assert "204" in operations["delete"]["responses"]
    assert "404" in operations["get"]["responses"]
