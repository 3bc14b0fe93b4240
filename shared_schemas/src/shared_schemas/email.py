"""Payload and result of the ``email.send`` task."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

from shared_schemas.addresses import EmailAddress, addr_spec
from shared_schemas.labels import Metadata, Tags

MAX_RECIPIENTS = 50
MAX_SUBJECT_LENGTH = 998  # RFC 5322 §2.1.1: a header line may not exceed 998 characters.
MAX_BODY_CHARS = 512 * 1024


def _as_list(value: Any) -> Any:
    """Accept one address where a list is expected, so ``"to": "a@x.org"`` works."""
    return [value] if isinstance(value, str) else value


def _single_line(value: str) -> str:
    # Any control character in a header (CR and LF above all) could smuggle a header in.
    if any(ch in value for ch in "\r\n\x00\v\f\u2028\u2029\x85"):
        raise ValueError("must be a single line: line breaks and NUL are not allowed")
    return value


AddressList = Annotated[list[EmailAddress], BeforeValidator(_as_list)]
HeaderText = Annotated[str, AfterValidator(_single_line)]

_REQUEST_EXAMPLE: dict[str, JsonValue] = {
    "to": ["alice@example.com"],
    "cc": ["bob@example.com"],
    "subject": "Your receipt",
    "body": "Thanks for your order.",
    "html": "<p>Thanks for your order.</p>",
    "tags": ["receipt"],
    "metadata": {"order_id": "A-1042"},
}


class SendEmailRequest(BaseModel):
    """One email to send. An address is ``user@example.com`` or, with a display name,
    ``Alice <user@example.com>`` (kept for the headers; the envelope takes the address)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=False,
        json_schema_extra={"examples": [_REQUEST_EXAMPLE]},
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
    subject: HeaderText = Field(min_length=1, max_length=MAX_SUBJECT_LENGTH)
    body: str = Field(max_length=MAX_BODY_CHARS, description="The plain-text part.")
    html: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        description="An optional HTML alternative to the plain-text body.",
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
        return self

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
