"""Build the MIME message for a SendEmailRequest."""

from __future__ import annotations

import functools
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from shared_schemas.email import SendEmailRequest


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard header classes, made once per header name.

    ``HeaderRegistry.__getitem__`` builds a new class with ``type()`` on every lookup,
    several times per header set: 40 % of building a mail, measured (docs/performance.md).
    The classes hold no state, so one per name serves every message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# policy=SMTP: CRLF line endings, and header values with CR/LF are refused again here,
# a second guard after the payload model.
_POLICY = SMTP.clone(header_factory=_CachedHeaderRegistry())


@functools.lru_cache(maxsize=8)
def _from_header(mail_from: str) -> BaseHeader:
    # MAIL_FROM is the same for every mail: parse it once. A parsed header object is
    # immutable and is stored as it is (EmailPolicy.header_store_parse).
    header: BaseHeader = _POLICY.header_factory("From", mail_from)
    return header


def message_id_for(task_id: str, sender_address: str) -> str:
    """A Message-ID derived from the task id, so a redelivered task sends the same id."""
    domain = sender_address.rpartition("@")[2] or "localhost"
    return f"<{task_id}@{domain}>"


def build_message(
    email: SendEmailRequest, *, mail_from: str, message_id: str, date: datetime
) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message["From"] = _from_header(mail_from)
    message["To"] = ", ".join(email.to)
    if email.cc:
        message["Cc"] = ", ".join(email.cc)
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    # Bcc is deliberately absent: its recipients travel only in the SMTP envelope.
    message.set_content(email.body)
    if email.html is not None:
        message.add_alternative(email.html, subtype="html")
    return message
