"""Build the MIME message for a SendEmailRequest, the standard library's way.

Headers are assigned to an ``EmailMessage`` with the SMTP policy (CRLF line ends; a
header value with CR or LF is refused again here, a second guard after the payload
model), the text with ``set_content`` and the HTML with ``add_alternative``. A faster
hand-written writer for plain mails saved ~25 µs a mail, 0.05 % of a mail's time to a
relay 50 ms away, and was removed (docs/design.md, "Decisions and their numbers").

Attachments and inline images take the standard library's own shapes (docs/design.md,
"Attachments, inline images and headers"): an inline image is ``add_related`` to the
HTML part, which makes it ``multipart/related`` inside the ``multipart/alternative``;
a file is ``add_attachment``, which makes the whole ``multipart/mixed``; a non-ASCII
filename is written per RFC 2231 by the policy.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from shared_schemas.content import Attachment
from shared_schemas.email import SendEmailRequest
from worker_service.errors import InvalidPayload


def message_id_for(task_id: str, sender_address: str) -> str:
    """A Message-ID derived from the task id, so a redelivered task sends the same id."""
    domain = sender_address.rpartition("@")[2] or "localhost"
    return f"<{task_id}@{domain}>"


def build_message(
    email: SendEmailRequest, *, mail_from: str, message_id: str, date: datetime
) -> EmailMessage:
    if email.subject is None or email.body is None:
        # The API renders templates before it queues (docs/design.md, "Templates").
        raise InvalidPayload("the payload has no subject or body: templates render at the API")
    message = EmailMessage(policy=SMTP)
    message["From"] = mail_from
    message["To"] = ", ".join(email.to)
    if email.cc:
        message["Cc"] = ", ".join(email.cc)
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Subject"] = email.subject
    message["Date"] = date
    message["Message-ID"] = message_id
    # Bcc is deliberately absent: its recipients travel only in the SMTP envelope.
    # The payload model allows only X-* and four list/threading names, none of which
    # the lines above write, and refuses line breaks in values; the policy checks again.
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.body)
    if email.html is not None:
        message.add_alternative(email.html, subtype="html")
    inline = [a for a in email.attachments if a.content_id is not None]
    if inline:
        # The payload model refuses a content_id without an HTML part that shows it.
        html_part = message.get_payload()[1]  # type: ignore[index]
        assert isinstance(html_part, EmailMessage)  # add_alternative makes one
        for attachment in inline:
            _add(html_part.add_related, attachment, "inline", f"<{attachment.content_id}>")
    for attachment in email.attachments:
        if attachment.content_id is None:
            _add(message.add_attachment, attachment, "attachment", None)
    return message


def _add(add: Any, attachment: Attachment, disposition: str, cid: str | None) -> None:
    maintype, subtype = attachment.media_type()
    add(
        attachment.content,
        maintype,
        subtype,
        disposition=disposition,
        filename=attachment.filename,
        cid=cid,
    )


def message_bytes(message: EmailMessage) -> bytes:
    """The message with CRLF line ends, as SMTP's DATA carries it."""
    return message.as_bytes(policy=SMTP)
