"""Attachments, inline images, custom headers and templates, end to end on real processes:
POST /send-email, Redis, a celery worker, a real SMTP server; each received mail is parsed
back with the standard library's ``email`` parser (tests/smtp_sink.py)."""

from __future__ import annotations

import base64
import os
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from shared_schemas.content import MAX_ATTACHMENTS_BYTES
from tests.conftest import OTHER_API_KEY, QuietApi, Stack
from tests.test_end_to_end import unique_subject, wait_until_finished

pytestmark = pytest.mark.integration

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/send-email", json=payload)
    assert response.status_code == 202, response.text
    status = wait_until_finished(client, response.json()["task_id"], timeout=60)
    assert status["status"] == "SUCCESS", status
    return status


def received(stack: Stack, subject: str) -> EmailMessage:
    [mail] = stack.smtp.wait_for_messages(1, timeout=60, Subject=subject)
    return mail.message


def parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if isinstance(part, EmailMessage)]


def test_attachments_inline_image_and_headers_arrive_as_given(stack: Stack) -> None:
    subject = unique_subject("Invoice")
    pdf = os.urandom(300_000)
    small = b"plain text file\r\nwith CRLF and \x00 a NUL"
    headers = {
        "X-Campaign": "spring-2026",
        "List-Unsubscribe": "<https://example.com/u?id=42>, <mailto:u@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "In-Reply-To": "<earlier@example.com>",
        "References": "<first@example.com> <earlier@example.com>",
    }
    payload = {
        "to": "alice@example.com",
        "subject": subject,
        "body": "Your invoice is attached.",
        "html": '<p><img src="cid:logo@example.com"> Your invoice.</p>',
        "attachments": [
            {"filename": "Rechnung März.pdf", "content": b64(pdf)},
            {"filename": "notes.txt", "content": b64(small)},
            {"filename": "logo.png", "content": b64(PNG), "content_id": "logo@example.com"},
        ],
        "headers": headers,
    }
    with stack.client() as client:
        send(client, payload)
    message = received(stack, subject)

    assert message.get_content_type() == "multipart/mixed"
    for name, value in headers.items():
        assert message[name] == value, name
    files = {part.get_filename(): part for part in parts(message) if part.is_attachment()}
    assert files["Rechnung März.pdf"].get_content_type() == "application/pdf"
    assert files["Rechnung März.pdf"].get_content() == pdf
    assert files["notes.txt"].get_content_type() == "text/plain"
    assert files["notes.txt"].get_payload(decode=True) == small

    # The inline image: inside multipart/related with the HTML, found by its cid.
    [related] = [p for p in parts(message) if p.get_content_type() == "multipart/related"]
    html = related.get_body(("html",))
    assert html is not None
    cid = html.get_content().split('src="cid:', 1)[1].split('"', 1)[0]
    [image] = [p for p in parts(related) if p["Content-ID"] == f"<{cid}>"]
    assert image.get_content_type() == "image/png"
    assert image.get_content() == PNG
    text = message.get_body(("plain",))
    assert text is not None
    assert text.get_content().strip() == "Your invoice is attached."


def test_ten_mebibytes_of_attachments_arrive_byte_identical(stack: Stack) -> None:
    subject = unique_subject("Large")
    first = os.urandom(MAX_ATTACHMENTS_BYTES - 1000)
    second = os.urandom(1000)
    payload = {
        "to": "alice@example.com",
        "subject": subject,
        "body": "Two files, the limit exactly.",
        "attachments": [
            {"filename": "big.bin", "content": b64(first)},
            {"filename": "small.bin", "content": b64(second)},
        ],
    }
    with stack.client() as client:
        send(client, payload)
    message = received(stack, subject)
    files = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    assert files == {"big.bin": first, "small.bin": second}


def test_template_is_rendered_and_an_edit_after_accept_changes_nothing(stack: Stack) -> None:
    name = f"welcome-{uuid.uuid4().hex[:8]}"
    recipient = f"tpl-{uuid.uuid4().hex[:8]}@example.com"
    source = {
        "subject": "Welcome, {{ name }}",
        "text": "Hello {{ name }}, your plan is {{ plan }}.",
        "html": "<p>Hello {{ name }}, your plan is <b>{{ plan }}</b>.</p>",
    }
    variables = {"name": "Tom & <Jerry>", "plan": "Pro"}
    stall = stack.smtp.stall_at_rcpt(recipient)
    try:
        with stack.client() as client:
            put = client.put(f"/templates/{name}", json=source)
            assert put.status_code == 200, put.text
            assert put.json()["version"] == 1
            response = client.post(
                "/send-email",
                json={"to": recipient, "template": {"name": name, "variables": variables}},
            )
            assert response.status_code == 202, response.text
            task_id = response.json()["task_id"]
            # Accepted and held at RCPT: now the template changes.
            edited = {**source, "subject": "Edited {{ name }}", "text": "Edited."}
            assert client.put(f"/templates/{name}", json=edited).json()["version"] == 2
            stall.release.set()
            status = wait_until_finished(client, task_id)
    finally:
        stall.release.set()
    assert status["status"] == "SUCCESS", status
    assert status["template"] == {"name": name, "version": 1}
    [mail] = stack.smtp.received_by(recipient)
    message = mail.message
    assert message["Subject"] == "Welcome, Tom & <Jerry>"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "Hello Tom & <Jerry>, your plan is Pro."
    assert html.get_content().strip() == (
        "<p>Hello Tom &amp; &lt;Jerry&gt;, your plan is <b>Pro</b>.</p>"
    )


def test_templates_are_per_key_versioned_and_listed(stack: Stack) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = {"subject": "S {{ x }}", "text": "T"}
    with stack.client() as client, stack.client(OTHER_API_KEY) as other:
        assert client.put(f"/templates/{name}", json=body).json()["version"] == 1
        assert client.put(f"/templates/{name}", json=body).json()["version"] == 2
        shown = client.get(f"/templates/{name}").json()
        assert (shown["name"], shown["version"], shown["subject"], shown["html"]) == (
            name,
            2,
            "S {{ x }}",
            None,
        )
        listed = client.get("/templates").json()["templates"]
        assert [(t["name"], t["version"]) for t in listed if t["name"] == name] == [(name, 2)]
        # Another key sees none of it.
        assert other.get(f"/templates/{name}").status_code == 404
        assert all(t["name"] != name for t in other.get("/templates").json()["templates"])
        assert client.delete(f"/templates/{name}").status_code == 204
        assert client.get(f"/templates/{name}").status_code == 404
        assert client.delete(f"/templates/{name}").status_code == 404
        # A version number is never reused.
        assert client.put(f"/templates/{name}", json=body).json()["version"] == 3
        refused = client.put(f"/templates/{name}", json={"subject": "{{ x", "text": "t"})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "subject"]
        assert client.put("/templates/bad%2Fname", json=body).status_code in (404, 422)
        assert httpx.put(f"{stack.base_url}/templates/{name}", json=body).status_code == 401


@pytest.mark.parametrize(
    ("payload", "loc", "words"),
    [
        (
            {"attachments": [{"filename": "a.pdf", "content": "not*base64"}]},
            ["body", "attachments", 0, "content"],
            "base64",
        ),
        (
            {"attachments": [{"filename": "../a.pdf", "content": "aGk="}]},
            ["body", "attachments", 0, "filename"],
            "path",
        ),
        (
            {"attachments": [{"filename": "a.png", "content": "aGk=", "content_id": "x"}]},
            ["body", "attachments", 0, "content_id"],
            "html",
        ),
        ({"headers": {"Bcc": "x@example.com"}}, ["body", "headers", "Bcc", "[key]"], "service"),
        ({"headers": {"X-A": "a\r\nBcc: x@example.com"}}, ["body", "headers", "X-A"], "line"),
    ],
)
def test_bad_content_is_a_located_422_and_queues_nothing(
    quiet_api: QuietApi, payload: dict[str, Any], loc: list[Any], words: str
) -> None:
    before = set(quiet_api.redis.keys("*"))  # other modules' tasks may share the database
    with quiet_api.client() as client:
        response = client.post(
            "/send-email", json={"to": "a@example.com", "subject": "s", "body": "b", **payload}
        )
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == loc
    assert words in problem["msg"]
    assert set(quiet_api.redis.keys("*")) == before


def test_template_problems_are_422s_naming_template_and_variable(quiet_api: QuietApi) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with quiet_api.client() as client:
        put = client.put(f"/templates/{name}", json={"subject": "Hi {{ who }}", "text": "t"})
        assert put.status_code == 200
        stored = quiet_api.redis.dbsize()
        cases = [
            ({"name": "no-such-template"}, ["body", "template", "name"], "no-such-template"),
            ({"name": name}, ["body", "template", "variables", "who"], "'who'"),
            ({"name": name, "variables": {"who": "a\nb"}}, ["body", "template"], "subject"),
        ]
        for template, loc, words in cases:
            response = client.post(
                "/send-email", json={"to": "a@example.com", "template": template}
            )
            assert response.status_code == 422, response.text
            [problem] = response.json()["detail"]
            assert problem["loc"] == loc
            assert words in problem["msg"]
            assert quiet_api.redis.dbsize() == stored, "a refused mail left something in Redis"
        client.delete(f"/templates/{name}")
    quiet_api.redis.flushdb()
