"""Attachments, inline images, custom headers and template references: what the contract
accepts and refuses, each refusal at its own location; and how the worker's MIME and the
API's template rendering treat what it accepts. No processes."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api_service.settings import ApiSettings
from api_service.template_rendering import Renderer, compile_problems
from shared_schemas.content import MAX_ATTACHMENTS, MAX_ATTACHMENTS_BYTES, base64_length
from shared_schemas.email import SendEmailRequest
from shared_schemas.templates import StoredTemplate, TemplateBody
from worker_service.errors import InvalidPayload
from worker_service.message import build_message, message_bytes

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mail(**fields: Any) -> dict[str, Any]:
    return {"to": "alice@example.com", "subject": "s", "body": "b", **fields}


def problems(payload: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    # From JSON, as the API validates a request.
    with pytest.raises(ValidationError) as caught:
        SendEmailRequest.model_validate_json(json.dumps(payload))
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


# --- attachments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not base64!", "not valid base64"),
        ("aGk", "not valid base64"),  # padding missing
        ("aGk=\n", "not valid base64"),
        ("", "empty"),
    ],
)
def test_bad_content_is_refused_at_the_attachment(content: str, why: str) -> None:
    found = problems(mail(attachments=[{"filename": "a.txt", "content": content}]))
    assert len(found) == 1
    assert found[0][0] == ("attachments", 0, "content")
    assert why in found[0][1]


@pytest.mark.parametrize(
    "filename",
    ["dir/a.pdf", "..\\a.pdf", "a\r\nb.pdf", "a\x00.pdf", "tab\there.pdf", "..", "", "x" * 256],
)
def test_bad_filenames_are_refused_at_the_filename(filename: str) -> None:
    found = problems(
        mail(
            attachments=[
                {"filename": "ok.txt", "content": "aGk="},
                {"filename": filename, "content": "aGk="},
            ]
        )
    )
    assert [loc for loc, _ in found] == [("attachments", 1, "filename")]


def test_limits_on_count_and_decoded_total() -> None:
    one = {"filename": "a.bin", "content": "aGk="}
    found = problems(mail(attachments=[one] * (MAX_ATTACHMENTS + 1)))
    assert found[0][0] == ("attachments",)
    big = b64(b"x" * (MAX_ATTACHMENTS_BYTES // 2 + 1))
    found = problems(
        mail(
            attachments=[
                {"filename": "a.bin", "content": big},
                {"filename": "b.bin", "content": big},
            ]
        )
    )
    assert found[0][0] == ("attachments",)
    assert str(MAX_ATTACHMENTS_BYTES) in found[0][1]
    # Exactly the limit is fine.
    exact = b64(b"x" * (MAX_ATTACHMENTS_BYTES // 2))
    SendEmailRequest.model_validate(
        mail(
            attachments=[
                {"filename": "a.bin", "content": exact},
                {"filename": "b.bin", "content": exact},
            ]
        )
    )


def test_max_request_bytes_default_carries_the_attachments_limit() -> None:
    settings = ApiSettings(api_keys="k")
    assert settings.max_request_bytes >= base64_length(MAX_ATTACHMENTS_BYTES) + 1024 * 1024


def test_content_type_is_guessed_from_the_filename_or_refused_when_malformed() -> None:
    email = SendEmailRequest.model_validate(
        mail(
            attachments=[
                {"filename": "r.PDF", "content": "aGk="},
                {"filename": "noext", "content": "aGk="},
                {"filename": "x.tar.gz", "content": "aGk="},
                {"filename": "m.eml", "content": "aGk="},
                {"filename": "i.bin", "content": "aGk=", "content_type": "Image/PNG"},
            ]
        )
    )
    assert [a.content_type for a in email.attachments] == [
        "application/pdf",
        "application/octet-stream",
        "application/octet-stream",
        "application/octet-stream",
        "image/png",
    ]
    for bad in ["pdf", "text/plain; charset=utf-8", "multipart/mixed", "message/rfc822"]:
        found = problems(
            mail(attachments=[{"filename": "a", "content": "aGk=", "content_type": bad}])
        )
        assert [loc for loc, _ in found] == [("attachments", 0, "content_type")], bad


def test_inline_content_id_must_be_shown_by_the_html() -> None:
    inline = {"filename": "logo.png", "content": b64(PNG), "content_id": "logo"}
    SendEmailRequest.model_validate(mail(html='<img src="cid:logo">', attachments=[inline]))
    for html in [None, '<img src="cid:logo2">', "<p>no image</p>"]:
        found = problems(
            mail(html=html, attachments=[{"filename": "a.txt", "content": "aGk="}, inline])
        )
        assert [loc for loc, _ in found] == [("attachments", 1, "content_id")], html
    twice = problems(
        mail(html='<img src="cid:logo">', attachments=[inline, {**inline, "content_id": "LOGO"}])
    )
    assert [loc for loc, _ in twice] == [("attachments", 1, "content_id")]


def test_attachments_round_trip_through_the_task_message() -> None:
    data = bytes(range(256)) * 10
    email = SendEmailRequest.model_validate(
        mail(attachments=[{"filename": "b.bin", "content": b64(data)}])
    )
    assert email.attachments[0].content == data
    dumped = email.model_dump(mode="json", exclude_defaults=True)
    assert dumped["attachments"][0]["content"] == b64(data)
    assert SendEmailRequest.model_validate(dumped) == email


# --- headers ---------------------------------------------------------------------------


def test_allowed_headers_are_kept_as_given() -> None:
    headers = {
        "X-Campaign": "spring",
        "x-lower": "ok",
        "List-Unsubscribe": "<https://example.com/u>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "In-Reply-To": "<a@example.com>",
        "References": "<a@example.com> <b@example.com>",
    }
    assert SendEmailRequest.model_validate(mail(headers=headers)).headers == headers


@pytest.mark.parametrize(
    ("name", "loc_tail"),
    [
        ("From", "[key]"),
        ("bcc", "[key]"),
        ("Content-Type", "[key]"),
        ("Content-Transfer-Encoding", "[key]"),
        ("MIME-Version", "[key]"),
        ("Message-ID", "[key]"),
        ("Reply-To", "[key]"),
        ("Received", "[key]"),
        ("X-Bad Name", "[key]"),
        ("X-Colon:", "[key]"),
        ("X-Ünicode", "[key]"),
        ("", "[key]"),
    ],
)
def test_refused_header_names(name: str, loc_tail: str) -> None:
    found = problems(mail(headers={name: "v"}))
    assert [loc for loc, _ in found] == [("headers", name, loc_tail)]


@pytest.mark.parametrize(
    "value", ["a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\x00b", "a\x1bb", "", "  "]
)
def test_refused_header_values(value: str) -> None:
    found = problems(mail(headers={"X-Ok": value}))
    assert [loc for loc, _ in found] == [("headers", "X-Ok")]


def test_a_header_name_given_twice_in_any_case_is_refused() -> None:
    found = problems(mail(headers={"X-Tag": "a", "x-tag": "b"}))
    assert [loc for loc, _ in found] == [("headers",)]


# --- template references ---------------------------------------------------------------


def test_template_replaces_subject_body_and_html() -> None:
    SendEmailRequest.model_validate({"to": "a@example.com", "template": {"name": "welcome"}})
    found = problems(
        {"to": "a@example.com", "subject": "s", "html": "h", "template": {"name": "w"}}
    )
    assert [loc for loc, _ in found] == [("subject",), ("html",)]
    found = problems({"to": "a@example.com"})
    assert [loc for loc, _ in found] == [("subject",), ("body",)]
    found = problems({"to": "a@example.com", "template": {"name": "../x"}})
    assert [loc for loc, _ in found] == [("template", "name")]


# --- the worker's MIME -----------------------------------------------------------------


def built(payload: dict[str, Any]) -> EmailMessage:
    email = SendEmailRequest.model_validate(payload)
    message = build_message(
        email, mail_from="s@example.org", message_id="<id@example.org>", date=datetime.now(UTC)
    )
    parsed = message_from_bytes(message_bytes(message), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_mime_structure_with_files_inline_images_and_headers() -> None:
    data = bytes(range(256))
    parsed = built(
        mail(
            html='<p><img src="cid:logo@x"></p>',
            attachments=[
                {"filename": "naïve résumé.pdf", "content": b64(data)},
                {"filename": "logo.png", "content": b64(PNG), "content_id": "logo@x"},
            ],
            headers={"X-Campaign": "spring", "References": "<a@example.com>"},
        )
    )
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = parsed.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    text, related = alternative.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo@x>"
    assert image.get_content() == PNG
    assert attachment.get_filename() == "naïve résumé.pdf"
    assert attachment.get_content() == data
    assert parsed["X-Campaign"] == "spring"
    assert parsed["References"] == "<a@example.com>"


def test_non_ascii_filename_is_written_per_rfc_2231() -> None:
    email = SendEmailRequest.model_validate(
        mail(attachments=[{"filename": "naïve.pdf", "content": "aGk="}])
    )
    raw = message_bytes(
        build_message(email, mail_from="s@example.org", message_id="<i@x>", date=datetime.now(UTC))
    )
    assert b"filename*=utf-8''na%C3%AFve.pdf" in raw


def test_a_plain_mail_keeps_its_shape() -> None:
    assert built(mail()).get_content_type() == "text/plain"
    assert built(mail(html="<p>h</p>")).get_content_type() == "multipart/alternative"


# --- template compilation and rendering -------------------------------------------------


class FakeStore:
    """The store's read, in memory: rendering is what is tested here."""

    def __init__(self) -> None:
        self.templates: dict[str, StoredTemplate] = {}

    def add(self, name: str, version: int, **sources: str | None) -> None:
        self.templates[name] = StoredTemplate.model_validate(
            {"name": name, "version": version, "updated_at": datetime.now(UTC), **sources}
        )

    async def get(self, owner: str, name: str) -> StoredTemplate | None:
        return self.templates.get(name)


def render(store: FakeStore, template: dict[str, Any], **fields: Any) -> Any:
    renderer = Renderer(store)  # type: ignore[arg-type]
    email = SendEmailRequest.model_validate({"to": "a@example.com", "template": template, **fields})
    return asyncio.run(renderer.prepare("owner", email))


def refused(store: FakeStore, template: dict[str, Any], **fields: Any) -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as caught:
        render(store, template, **fields)
    return list(caught.value.errors())


def test_rendering_escapes_html_only() -> None:
    store = FakeStore()
    store.add("w", 2, subject="Hi {{ name }}", text="Dear {{ name }}", html="<p>{{ name }}</p>")
    prepared = render(store, {"name": "w", "variables": {"name": "<Tom & Jerry>"}})
    assert prepared.email.subject == "Hi <Tom & Jerry>"
    assert prepared.email.body == "Dear <Tom & Jerry>"
    assert prepared.email.html == "<p>&lt;Tom &amp; Jerry&gt;</p>"
    assert prepared.email.template is None
    assert (prepared.template.name, prepared.template.version) == ("w", 2)


def test_unknown_template_and_missing_variable_are_named() -> None:
    store = FakeStore()
    store.add("w", 1, subject="Hi {{ name }}", text="{{ user.email }}")
    [problem] = refused(store, {"name": "nope"})
    assert problem["loc"] == ("body", "template", "name")
    assert "nope" in problem["msg"]
    [problem] = refused(store, {"name": "w"})
    assert problem["loc"] == ("body", "template", "variables", "name")
    assert "'w' (version 1)" in problem["msg"]
    assert "'name'" in problem["msg"]
    [problem] = refused(store, {"name": "w", "variables": {"name": "x", "user": {}}})
    assert problem["loc"][:3] == ("body", "template", "variables")
    assert "email" in problem["msg"]


def test_subject_rendered_with_a_line_break_is_refused() -> None:
    store = FakeStore()
    store.add("w", 1, subject="Hi {{ name }}", text="t")
    [problem] = refused(store, {"name": "w", "variables": {"name": "x\r\nBcc: evil@example.com"}})
    assert problem["loc"] == ("body", "template")
    assert "subject" in problem["msg"]
    assert "'w'" in problem["msg"]


def test_sandbox_refuses_python_internals() -> None:
    store = FakeStore()
    store.add("w", 1, subject="s", text="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    [problem] = refused(store, {"name": "w"})
    assert problem["loc"] == ("body", "template")


def test_inline_image_of_a_template_checked_against_the_rendered_html() -> None:
    store = FakeStore()
    store.add("w", 1, subject="s", text="t", html='<img src="cid:{{ cid }}">')
    inline = [{"filename": "l.png", "content": b64(PNG), "content_id": "logo"}]
    render(store, {"name": "w", "variables": {"cid": "logo"}}, attachments=inline)
    [problem] = refused(store, {"name": "w", "variables": {"cid": "other"}}, attachments=inline)
    assert problem["loc"] == ("body", "attachments", 0, "content_id")


def test_put_refuses_a_template_that_does_not_compile() -> None:
    found = compile_problems(TemplateBody(subject="{{ x", text="ok", html="{% if %}"))
    assert [p["loc"] for p in found] == [("body", "subject"), ("body", "html")]
    assert all("line 1" in p["msg"] for p in found)
    assert (
        compile_problems(
            TemplateBody(subject="{{ x }}", text="{% for i in y %}{{ i }}{% endfor %}")
        )
        == []
    )


def test_the_worker_refuses_an_unrendered_template_payload() -> None:
    email = SendEmailRequest.model_validate({"to": "a@example.com", "template": {"name": "w"}})
    with pytest.raises(InvalidPayload, match="render at the API"):
        build_message(email, mail_from="s@example.org", message_id="<i@x>", date=datetime.now(UTC))
