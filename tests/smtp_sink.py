"""A real SMTP server (aiosmtpd) that records what it receives, for assertions."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.procs import free_port, wait_for

# Recipients whose local part starts with this are refused with a permanent error.
REFUSED_PREFIX = "refused-"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith(REFUSED_PREFIX):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert isinstance(envelope.content, bytes)
        # On the wire lines end in CRLF; parse as a mail reader would, with plain newlines.
        parsed = message_from_bytes(envelope.content.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def messages(self, **header_match: str) -> list[Received]:
        """Messages whose headers equal every given value (header names use _ for -)."""
        with self.handler._lock:
            snapshot = list(self.handler.received)
        return [
            item
            for item in snapshot
            if all(
                str(item.message.get(name.replace("_", "-"), "")) == value
                for name, value in header_match.items()
            )
        ]

    def wait_for_messages(
        self, count: int, timeout: float = 30, **header_match: str
    ) -> list[Received]:
        wait_for(
            lambda: len(self.messages(**header_match)) >= count,
            timeout=timeout,
            what=f"{count} mail(s) matching {header_match}",
        )
        return self.messages(**header_match)

    def stop(self) -> None:
        self._controller.stop()
