"""A mail goes from POST /send-email through Redis and a worker to a real SMTP server."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from tests.conftest import MAIL_FROM, Stack
from tests.procs import wait_for
from tests.smtp_sink import REFUSED_PREFIX

pytestmark = pytest.mark.integration


def unique_subject(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:12]}"


def wait_until_finished(client: httpx.Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def finished() -> bool:
        response = client.get(f"/task-status/{task_id}")
        assert response.status_code == 200, response.text
        seen.update(response.json())
        return seen["status"] in ("SUCCESS", "FAILURE", "REVOKED")

    wait_for(finished, timeout=timeout, what=f"task {task_id} to finish")
    return seen


def test_mail_is_delivered_with_envelope_headers_and_body(stack: Stack) -> None:
    subject = unique_subject("Receipt")
    payload = {
        "to": ["alice@example.com", "bob@example.com"],
        "cc": "carol@example.com",
        "bcc": ["dave@example.com"],
        "reply_to": "support@example.org",
        "subject": subject,
        "body": "Thanks for your order.\nSee you soon.",
        "html": "<p>Thanks for your <b>order</b>.</p>",
    }
    with stack.client() as client:
        response = client.post("/send-email", json=payload)
        assert response.status_code == 202, response.text
        accepted = response.json()
        task_id = accepted["task_id"]
        assert accepted["status"] == "PENDING"
        assert accepted["status_url"].endswith(f"/task-status/{task_id}")
        assert response.headers["Location"] == accepted["status_url"]

        status = wait_until_finished(client, task_id)

    assert status["status"] == "SUCCESS", status
    assert status["task"] == "email.send"
    assert status["retries"] == 0
    assert status["error"] is None
    submitted = datetime.fromisoformat(status["submitted_at"])
    started = datetime.fromisoformat(status["started_at"])
    finished = datetime.fromisoformat(status["finished_at"])
    assert submitted <= started <= finished
    result = status["result"]
    assert result["message_id"] == f"<{task_id}@example.org>"
    assert result["accepted"] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert result["rejected"] == []

    [mail] = stack.smtp.wait_for_messages(1, Subject=subject)
    assert mail.mail_from == "sender@example.org"
    assert sorted(mail.rcpt_tos) == sorted(result["accepted"])
    message = mail.message
    assert message["From"] == MAIL_FROM
    assert message["To"] == "alice@example.com, bob@example.com"
    assert message["Cc"] == "carol@example.com"
    assert message["Reply-To"] == "support@example.org"
    assert message["Message-ID"] == result["message_id"]
    assert message["Date"] is not None
    assert "Bcc" not in message
    assert b"dave@example.com" not in message.as_bytes()
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().rstrip("\n") == payload["body"]
    assert html.get_content().rstrip("\n") == payload["html"]


def test_plain_text_only_mail_to_one_address(stack: Stack) -> None:
    subject = unique_subject("Plain")
    with stack.client() as client:
        response = client.post(
            "/send-email", json={"to": "erin@example.com", "subject": subject, "body": "Hi"}
        )
        assert response.status_code == 202, response.text
        status = wait_until_finished(client, response.json()["task_id"])
    assert status["status"] == "SUCCESS"
    [mail] = stack.smtp.wait_for_messages(1, Subject=subject)
    assert mail.rcpt_tos == ["erin@example.com"]
    assert mail.message.get_content_type() == "text/plain"
    assert mail.message.get_content().rstrip("\n") == "Hi"


def test_partly_refused_recipients_are_reported_with_the_servers_reason(stack: Stack) -> None:
    subject = unique_subject("Partial")
    refused = f"{REFUSED_PREFIX}frank@example.com"
    with stack.client() as client:
        response = client.post(
            "/send-email",
            json={"to": ["gina@example.com", refused], "subject": subject, "body": "x"},
        )
        status = wait_until_finished(client, response.json()["task_id"])
    assert status["status"] == "SUCCESS", status
    assert status["result"]["accepted"] == ["gina@example.com"]
    assert status["result"]["rejected"] == [
        {"address": refused, "code": 550, "reason": "5.1.1 No such user here"}
    ]
    [mail] = stack.smtp.wait_for_messages(1, Subject=subject)
    assert mail.rcpt_tos == ["gina@example.com"]


def test_mail_refused_for_every_recipient_fails_with_the_smtp_reply(stack: Stack) -> None:
    subject = unique_subject("Refused")
    with stack.client() as client:
        response = client.post(
            "/send-email",
            json={"to": f"{REFUSED_PREFIX}hal@example.com", "subject": subject, "body": "x"},
        )
        status = wait_until_finished(client, response.json()["task_id"])
    assert status["status"] == "FAILURE", status
    assert status["result"] is None
    assert status["error"]["type"] == "PermanentDeliveryError"
    assert "550" in status["error"]["message"]
    assert f"{REFUSED_PREFIX}hal@example.com" in status["error"]["message"]
    assert stack.smtp.messages(Subject=subject) == []


def test_celerys_own_result_api_sees_the_success(stack: Stack) -> None:
    """The worker stores SUCCESS with its delivery mark (one round trip, not Celery's
    two); what it stores must be what Celery would have: its meta, key and expiry."""
    celery_client = Celery("reader", backend=stack.env["CELERY_RESULT_BACKEND"])
    with stack.client() as client:
        response = client.post(
            "/send-email",
            json={"to": "erin@example.com", "subject": unique_subject("AsyncResult"), "body": "b"},
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        status = wait_until_finished(client, task_id)
    try:
        result = AsyncResult(task_id, app=celery_client)
        stored = result.get(timeout=10)
        assert result.status == "SUCCESS"
        assert result.date_done is not None
        shown = status["result"]
        assert {k: v for k, v in stored.items() if k != "sent_at"} == {
            k: v for k, v in shown.items() if k != "sent_at"
        }
        assert datetime.fromisoformat(stored["sent_at"]) == datetime.fromisoformat(shown["sent_at"])
        store = redis.Redis.from_url(stack.env["CELERY_RESULT_BACKEND"])
        assert store.ttl(celery_client.backend.get_key_for_task(task_id)) > 0
        store.close()
    finally:
        celery_client.close()
