"""Build the MIME message for a SendEmailRequest."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from shared_schemas.email import SendEmailRequest


def message_id_for(task_id: str, sender_address: str) -> str:
    """A Message-ID derived from the task id, so a redelivered task sends the same id."""
    domain = sender_address.rpartition("@")[2] or "localhost"
    return f"<{task_id}@{domain}>"


def build_message(
    email: SendEmailRequest, *, mail_from: str, message_id: str, date: datetime
) -> EmailMessage:
    # policy=SMTP: CRLF line endings, and header values with CR/LF are refused
    # again here, a second guard after the payload model.
    message = EmailMessage(policy=SMTP)
    message["From"] = mail_from
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
