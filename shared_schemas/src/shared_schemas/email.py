"""Payload and result of the ``email.send`` task."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared_schemas.addresses import EmailAddress, addr_spec
from shared_schemas.content import Attachments, Headers, TemplateRef, unused_content_ids
from shared_schemas.labels import Metadata, Tags
from shared_schemas.schedule import MAX_AHEAD

MAX_RECIPIENTS = 50
MAX_SUBJECT_LENGTH = 998  # RFC 5322 §2.1.1: a header line may not exceed 998 characters.
MAX_BODY_CHARS = 512 * 1024


def _as_list(value: Any) -> Any:
    """Accept one address where a list is expected, so ``"to": "a@x.org"`` works."""
    return [value] if isinstance(value, str) else value


# Any control character in a header (CR and LF above all) could smuggle a header in.
_LINE_BREAK = re.compile("[\r\n\x00\v\f\u2028\u2029\x85]")


def _single_line(value: str) -> str:
    if _LINE_BREAK.search(value):
        raise ValueError("must be a single line: line breaks and NUL are not allowed")
    return value


# RFC 3339's date-time (section 5.6), the offset apart: checked on its own for a
# precise message. Python's parser alone would also take a number, a date, no seconds.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?")
_OFFSET = re.compile(r"[Zz]|[+-]\d{2}:\d{2}")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):  # built in Python, not parsed: AwareDatetime checks it
        return value
    if not isinstance(value, str) or not (stamp := _RFC3339.match(value)):
        raise PydanticCustomError(
            "rfc3339", "must be an RFC 3339 date-time, e.g. 2026-11-22T10:00:00+01:00"
        )
    if not _OFFSET.fullmatch(value[stamp.end() :]):
        raise PydanticCustomError(
            "rfc3339_offset", "needs a UTC offset (Z or +hh:mm), e.g. 2026-11-22T10:00:00+01:00"
        )
    return value


def _within_reach(value: datetime) -> datetime:
    if value - datetime.now(UTC) > MAX_AHEAD:
        raise PydanticCustomError(
            "send_at_too_far", "must be at most {days} days ahead", {"days": MAX_AHEAD.days}
        )
    return value


AddressList = Annotated[list[EmailAddress], BeforeValidator(_as_list)]
HeaderText = Annotated[str, AfterValidator(_single_line)]
SendAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_within_reach)]

_REQUEST_EXAMPLE: dict[str, JsonValue] = {
    "to": ["alice@example.com"],
    "cc": ["bob@example.com"],
    "subject": "Your receipt",
    "body": "Thanks for your order.",
    "html": "<p>Thanks for your order.</p>",
    "tags": ["receipt"],
    "metadata": {"order_id": "A-1042"},
}
_ATTACHMENTS_EXAMPLE: dict[str, JsonValue] = {
    "to": ["alice@example.com"],
    "subject": "Your invoice",
    "body": "Your invoice is attached.",
    "html": '<p><img src="cid:logo"> Your invoice is attached.</p>',
    "attachments": [
        {"filename": "invoice-2026-11.pdf", "content": "JVBERi0xLjcKJeLjz9MK"},
        {
            "filename": "logo.png",
            "content": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAF"
            "BQIAX8jx0gAAAABJRU5ErkJggg==",
            "content_type": "image/png",
            "content_id": "logo",
        },
    ],
    "headers": {
        "List-Unsubscribe": "<https://example.com/unsubscribe?u=42>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Campaign": "invoices",
    },
}
_TEMPLATE_EXAMPLE: dict[str, JsonValue] = {
    "to": ["alice@example.com"],
    "template": {"name": "welcome", "variables": {"name": "Alice", "plan": "Pro"}},
}


class SendEmailRequest(BaseModel):
    """One email to send. An address is ``user@example.com`` or, with a display name,
    ``Alice <user@example.com>`` (kept for the headers; the envelope takes the address)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=False,
        json_schema_extra={"examples": [_REQUEST_EXAMPLE, _ATTACHMENTS_EXAMPLE, _TEMPLATE_EXAMPLE]},
    )

    to: AddressList = Field(
        min_length=1,
        description="One address or a list of addresses: user@example.com or "
        "Alice <user@example.com>.",
    )
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(
        default_factory=list, description="Receives the mail; never appears in its headers."
    )
    reply_to: EmailAddress | None = None
    subject: HeaderText | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUBJECT_LENGTH,
        description="One line. Required, unless a template gives it.",
    )
    body: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        description="The plain-text part. Required, unless a template gives it.",
    )
    html: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        description="An optional HTML alternative to the plain-text body.",
    )
    attachments: Attachments = Field(
        default_factory=list,
        description="Files sent with the mail (multipart/mixed); one with a content_id is "
        "an inline image of the HTML (multipart/related).",
    )
    headers: Headers = Field(
        default_factory=dict,
        description="Extra headers: X-* names, List-Unsubscribe, List-Unsubscribe-Post, "
        "In-Reply-To and References. One line each.",
    )
    template: TemplateRef | None = Field(
        default=None,
        description="A stored template (PUT /templates/{name}) rendered with its variables "
        "in place of subject, body and html, which must then be absent.",
    )
    send_at: SendAt | None = Field(
        default=None,
        description="When to send it: an RFC 3339 date-time with a UTC offset, at most "
        "30 days ahead. Until then the task is SCHEDULED; a time in the past sends it now.",
        examples=["2026-11-22T10:00:00+01:00"],
    )
    # The caller's labels (shared_schemas.labels): stored with the task, not sent.
    tags: Tags = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)

    @model_validator(mode="after")
    def _limit_recipients(self) -> SendEmailRequest:
        total = len(self.to) + len(self.cc) + len(self.bcc)
        if total > MAX_RECIPIENTS:
            raise ValueError(
                f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together; got {total}"
            )
        problems = self._content_problems()
        if problems:
            # Raised with each problem's own location (["body", "attachments", 1,
            # "content_id"]), where a ValueError would be located at the body alone.
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _content_problems(self) -> list[InitErrorDetails]:
        problems: list[InitErrorDetails] = []
        if self.template is not None:
            for field in ("subject", "body", "html"):
                if getattr(self, field) is not None:
                    problems.append(
                        _problem("template_exclusive", "not allowed with a template", (field,))
                    )
        else:
            for field in ("subject", "body"):
                if getattr(self, field) is None:
                    problems.append(InitErrorDetails(type="missing", loc=(field,), input=None))
            if self.attachments:
                for index, why in unused_content_ids(self.attachments, self.html):
                    problems.append(
                        _problem("content_id_unused", why, ("attachments", index, "content_id"))
                    )
        return problems

    def envelope_recipients(self) -> list[str]:
        """Every recipient's bare address once, in order (an address repeated in
        to/cc/bcc, with or without a display name, gets one copy)."""
        seen: set[str] = set()
        unique: list[str] = []
        for recipient in [*self.to, *self.cc, *self.bcc]:
            address = addr_spec(recipient)
            if address.lower() not in seen:
                seen.add(address.lower())
                unique.append(address)
        return unique


def _problem(kind: str, message: str, loc: tuple[str | int, ...]) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError(kind, "{why}", {"why": message}), loc=loc, input=None
    )


class RejectedRecipient(BaseModel):
    """A recipient the SMTP server refused, with its reply."""

    address: str
    code: int
    reason: str


class EmailResult(BaseModel):
    """What the SMTP server did with the mail."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(description="The Message-ID header of the sent mail.")
    accepted: list[str] = Field(description="Recipients the SMTP server accepted.")
    rejected: list[RejectedRecipient] = Field(
        default_factory=list,
        description="Recipients the SMTP server refused for good (5xx), or deferred (4xx) "
        "until the retries ran out, and why.",
    )
    deferred: list[RejectedRecipient] = Field(
        default_factory=list,
        description="Recipients the SMTP server deferred (4xx) while the mail is retried "
        "for them alone; empty once the task has finished.",
    )
    sent_at: datetime
