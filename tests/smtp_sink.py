"""A real SMTP server (aiosmtpd) that records what it receives and can be scripted.

Tests script replies per recipient address: refuse it, answer 4xx a few times,
or stall the session at RCPT or at QUIT until released.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
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
    at: float = field(default_factory=time.monotonic)  # when the data was accepted


@dataclass
class Stall:
    release: threading.Event
    waiting: int = 0  # sessions currently held


class RecordingHandler:
    def __init__(self, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.mail_from_replies: dict[str, str] = {}
        self.received: list[Received] = []
        self.rcpt_replies: dict[str, deque[str]] = {}
        self.rcpt_attempts: dict[str, int] = {}
        self.rcpt_stalls: dict[str, Stall] = {}
        self.quit_stalls: dict[str, Stall] = {}
        self._last_rcpts: dict[int, list[str]] = {}
        self.lock = threading.Lock()

    async def _hold(self, stall: Stall) -> None:
        with self.lock:
            stall.waiting += 1
        try:
            await asyncio.to_thread(stall.release.wait)
        finally:
            with self.lock:
                stall.waiting -= 1

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # Offer RFC 2920 PIPELINING as production MTAs do (aiosmtpd reads pipelined
        # commands in order either way); the hook must record the client's name itself.
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self.lock:
            reply = self.mail_from_replies.get(address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self.lock:
            self.rcpt_attempts[address] = self.rcpt_attempts.get(address, 0) + 1
            scripted = self.rcpt_replies.get(address)
            reply = scripted.popleft() if scripted else None
            stall = self.rcpt_stalls.get(address)
        if stall is not None:
            await self._hold(stall)
        if reply is not None:
            return reply
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
        with self.lock:
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
            self._last_rcpts[id(session)] = list(envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    async def handle_QUIT(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self.lock:
            rcpts = self._last_rcpts.pop(id(session), [])
            stalls = [self.quit_stalls[r] for r in rcpts if r in self.quit_stalls]
        for stall in stalls:
            await self._hold(stall)
        return "221 Bye"


class SmtpSink:
    def __init__(self, pipelining: bool = True) -> None:
        self.handler = RecordingHandler(pipelining)
        self.port = free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def messages(self, **header_match: str) -> list[Received]:
        """Messages whose headers equal every given value (header names use _ for -)."""
        with self.handler.lock:
            snapshot = list(self.handler.received)
        return [
            item
            for item in snapshot
            if all(
                str(item.message.get(name.replace("_", "-"), "")) == value
                for name, value in header_match.items()
            )
        ]

    def received_by(self, address: str) -> list[Received]:
        with self.handler.lock:
            return [item for item in self.handler.received if address in item.rcpt_tos]

    def wait_for_messages(
        self, count: int, timeout: float = 30, **header_match: str
    ) -> list[Received]:
        wait_for(
            lambda: len(self.messages(**header_match)) >= count,
            timeout=timeout,
            what=f"{count} mail(s) matching {header_match}",
        )
        return self.messages(**header_match)

    def reply_to_rcpt(self, address: str, *replies: str) -> None:
        """Answer the next RCPT TOs for ``address`` with these replies, then accept."""
        with self.handler.lock:
            self.handler.rcpt_replies[address] = deque(replies)

    def rcpt_attempts(self, address: str) -> int:
        with self.handler.lock:
            return self.handler.rcpt_attempts.get(address, 0)

    def refuse_mail_from(self, address: str, reply: str) -> None:
        with self.handler.lock:
            self.handler.mail_from_replies[address] = reply

    def stall_at_rcpt(self, address: str) -> Stall:
        stall = Stall(threading.Event())
        with self.handler.lock:
            self.handler.rcpt_stalls[address] = stall
        return stall

    def stall_at_quit(self, address: str) -> Stall:
        """Hold the session after the mail was accepted, before QUIT is answered."""
        stall = Stall(threading.Event())
        with self.handler.lock:
            self.handler.quit_stalls[address] = stall
        return stall

    def stop(self) -> None:
        with self.handler.lock:
            stalls = [*self.handler.rcpt_stalls.values(), *self.handler.quit_stalls.values()]
        for stall in stalls:
            stall.release.set()
        self._controller.stop()
