"""The contract of attachments stored beside the task message (shared_schemas.stored_content),
on its own: what the API queues for a mail with files, and what the worker accepts back."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from shared_schemas.email import SendEmailRequest
from shared_schemas.stored_content import (
    ContentMismatch,
    QueuedEmail,
    attach,
    content_key,
    split,
)
from shared_schemas.tasks import SEND_EMAIL, TASKS

PNG = b"\x89PNG\r\n\x1a\n not really an image"
PDF = bytes(range(256)) * 40


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mail(**fields: Any) -> dict[str, Any]:
    return {"to": "a@example.com", "subject": "s", "body": "b", **fields}


def with_files() -> SendEmailRequest:
    return SendEmailRequest.model_validate(
        mail(
            html='<p><img src="cid:logo"></p>',
            attachments=[
                {"filename": "invoice.pdf", "content": b64(PDF)},
                {"filename": "logo.png", "content": b64(PNG), "content_id": "logo"},
            ],
        )
    )


def test_the_message_carries_a_reference_and_the_bytes_go_to_the_store() -> None:
    task_id = str(uuid.uuid4())
    kwargs, stored = TASKS[SEND_EMAIL].message(with_files(), task_id)
    assert stored == [PDF, PNG]
    payload = kwargs["email"]
    assert "attachments" not in payload
    assert payload["content_ref"] == {
        "key": content_key(task_id),
        "sha256": hashlib.sha256(PDF + PNG).hexdigest(),
        "attachments": [
            {"filename": "invoice.pdf", "content_type": "application/pdf", "size": len(PDF)},
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "size": len(PNG),
                "content_id": "logo",
            },
        ],
    }
    # No base64 of the files anywhere in the message's arguments.
    assert len(json.dumps(kwargs)) < 1000


def test_the_worker_gets_the_mail_back_byte_for_byte() -> None:
    email = with_files()
    payload, stored = split(email, str(uuid.uuid4()))
    queued = QueuedEmail.model_validate(payload)
    restored = attach(queued, stored)
    assert restored.content_ref is None  # type: ignore[attr-defined]
    assert [a.model_dump() for a in restored.attachments] == [
        a.model_dump() for a in email.attachments
    ]


@pytest.mark.parametrize(
    "stored",
    [[PDF], [PDF, PNG + b"x"], [PDF[:-1] + b"\x00", PNG]],
    ids=["one missing", "longer", "changed"],
)
def test_stored_bytes_that_differ_from_the_reference_are_refused(stored: list[bytes]) -> None:
    payload, _ = split(with_files(), str(uuid.uuid4()))
    with pytest.raises(ContentMismatch):
        attach(QueuedEmail.model_validate(payload), stored)


def test_a_mail_without_files_is_queued_as_before() -> None:
    email = SendEmailRequest.model_validate(mail())
    payload, stored = split(email, str(uuid.uuid4()))
    assert stored == []
    assert payload == email.model_dump(mode="json", exclude_defaults=True)


def test_inline_attachments_of_an_older_message_are_still_accepted() -> None:
    email = with_files()
    queued = QueuedEmail.model_validate(email.model_dump(mode="json", exclude_defaults=True))
    assert attach(queued, []) is queued
    assert queued.attachments[0].content == PDF


def test_a_request_cannot_name_stored_content() -> None:
    payload, _ = split(with_files(), str(uuid.uuid4()))
    with pytest.raises(ValidationError) as refused:
        SendEmailRequest.model_validate(payload)
    assert [error["loc"] for error in refused.value.errors()] == [("content_ref",)]


def test_a_queued_mail_is_checked_as_the_request_was() -> None:
    payload, _ = split(with_files(), str(uuid.uuid4()))
    # The HTML no longer shows the inline image.
    with pytest.raises(ValidationError, match="cid:logo"):
        QueuedEmail.model_validate({**payload, "html": "<p>no image</p>"})
    both = {**payload, "attachments": [{"filename": "a.txt", "content": b64(b"a")}]}
    with pytest.raises(ValidationError, match="inline or stored"):
        QueuedEmail.model_validate(both)
    other_key = {**payload["content_ref"], "key": "email-dispatch:task:x"}
    with pytest.raises(ValidationError):
        QueuedEmail.model_validate({**payload, "content_ref": other_key})
