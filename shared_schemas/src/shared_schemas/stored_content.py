"""Attachments travel beside the task message, not inside it.

The API stores a mail's attachment bytes once, raw, in the result store under
``email-dispatch:content:<task id>`` (a hash: field ``"0"``, ``"1"``, … per attachment),
and the queued payload, a ``QueuedEmail``, carries a ``ContentRef`` in their place: the
key, each file's name, type, content id and size, and the sha256 of the bytes. The
worker reads the bytes back, checks them against the reference, and deletes the key
when the task ends. Inside the message they were base64 twice over (in the JSON, then
in kombu's body) and re-encoded on every hop: docs/design.md, "Attachments, inline
images and headers".

A payload without ``content_ref`` may still carry its attachments inline (a message
queued by an API from before this split); the worker accepts both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared_schemas.content import (
    MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_BYTES,
    Attachment,
    ContentId,
    Filename,
    MediaType,
    unused_content_ids,
)
from shared_schemas.email import SendEmailRequest

KEY_PREFIX = "email-dispatch:content:"


def content_key(task_id: str) -> str:
    """Where the attachments of task ``task_id`` are stored (in the result store)."""
    return f"{KEY_PREFIX}{task_id}"


def field_names(count: int) -> list[str]:
    """The hash fields of ``count`` stored attachments, in order."""
    return [str(index) for index in range(count)]


def digest(files: Sequence[bytes]) -> str:
    """The sha256 of the files' bytes, one after the other (their sizes delimit them)."""
    sha = hashlib.sha256()
    for data in files:
        sha.update(data)
    return sha.hexdigest()


class StoredAttachment(BaseModel):
    """An attachment whose bytes are stored under the reference's key."""

    model_config = ConfigDict(extra="forbid")

    filename: Filename
    content_type: MediaType  # decided by the API (shared_schemas.content.Attachment)
    content_id: ContentId | None = None
    size: int = Field(gt=0, le=MAX_ATTACHMENTS_BYTES)


class ContentRef(BaseModel):
    """Where a queued mail's attachments are, and what they must be."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, StringConstraints(pattern=rf"^{KEY_PREFIX}\S{{1,128}}$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    attachments: list[StoredAttachment] = Field(min_length=1, max_length=MAX_ATTACHMENTS)

    @model_validator(mode="after")
    def _within_limits(self) -> ContentRef:
        total = sum(attachment.size for attachment in self.attachments)
        if total > MAX_ATTACHMENTS_BYTES:
            raise ValueError(
                f"the attachments total {total} bytes; at most {MAX_ATTACHMENTS_BYTES}"
            )
        return self


class QueuedEmail(SendEmailRequest):
    """The ``email.send`` task's payload: the accepted mail, its attachments stored
    beside the message (``content_ref``). Built by ``split``, never by a caller of the
    HTTP API, whose body is a ``SendEmailRequest`` and refuses ``content_ref``."""

    content_ref: ContentRef | None = None

    @model_validator(mode="after")
    def _stored_or_inline(self) -> QueuedEmail:
        ref = self.content_ref
        if ref is None:
            return self
        if self.attachments:
            raise ValueError("attachments travel either inline or stored, not both")
        problems = unused_content_ids(ref.attachments, self.html)
        if problems:
            raise ValueError("; ".join(f"attachment {index}: {why}" for index, why in problems))
        return self


class ContentMismatch(ValueError):
    """The stored bytes are not the ones the reference names."""


def split(email: SendEmailRequest, task_id: str) -> tuple[dict[str, Any], list[bytes]]:
    """The ``QueuedEmail`` payload's JSON for ``email``, and the bytes to store under
    ``content_key(task_id)`` first (none for a mail without attachments).

    The bytes are the ones the API decoded from the request; nothing is encoded again.
    """
    if not email.attachments:
        return email.model_dump(mode="json", exclude_defaults=True), []
    files = [attachment.content for attachment in email.attachments]
    stored: list[dict[str, Any]] = []
    for attachment, data in zip(email.attachments, files, strict=True):
        entry: dict[str, Any] = {
            "filename": attachment.filename,
            "content_type": attachment.content_type,
            "size": len(data),
        }
        if attachment.content_id is not None:
            entry["content_id"] = attachment.content_id
        stored.append(entry)
    payload = email.model_dump(mode="json", exclude_defaults=True, exclude={"attachments"})
    payload["content_ref"] = {
        "key": content_key(task_id),
        "sha256": digest(files),
        "attachments": stored,
    }
    return payload, files


def attach(email: QueuedEmail, files: Sequence[bytes]) -> SendEmailRequest:
    """``email`` with the stored ``files`` as its attachments, after checking them
    against its reference: their number, each size and the sha256. ContentMismatch
    if they differ."""
    ref = email.content_ref
    if ref is None:
        return email
    sizes = [attachment.size for attachment in ref.attachments]
    if [len(data) for data in files] != sizes:
        raise ContentMismatch(
            f"the stored attachments have sizes {[len(data) for data in files]}, "
            f"the message names {sizes}"
        )
    if digest(files) != ref.sha256:
        raise ContentMismatch("the stored attachments do not match the message's sha256")
    attachments = [
        # Every field was validated at the API and again in the reference: no second
        # pass over the bytes.
        Attachment.model_construct(
            filename=stored.filename,
            content=data,
            content_type=stored.content_type,
            content_id=stored.content_id,
        )
        for stored, data in zip(ref.attachments, files, strict=True)
    ]
    return email.model_copy(update={"attachments": attachments, "content_ref": None})
