"""The SMTP server of the chaos soak (devtools/chaos.py): aiosmtpd in a thread.

It accepts every mail, answers each RCPT only after a delay (a relay tens of
milliseconds away, so a killed node is likely to be caught mid-send), and records
the Message-ID header of every mail it receives, once per copy received.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.controller import Controller

from devtools.procs import free_port

HOSTNAME = "sink.chaos.local"


class _Handler:
    def __init__(self, rcpt_delay: float) -> None:
        self.rcpt_delay = rcpt_delay
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), Message-ID)
        self._headers = BytesHeaderParser(policy=compat32)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # Offer RFC 2920 PIPELINING as production MTAs do; the hook records the name.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        await asyncio.sleep(self.rcpt_delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        content = envelope.content
        if isinstance(content, str):
            content = content.encode()
        headers = self._headers.parsebytes(content.replace(b"\r\n", b"\n"))
        message_id = str(headers.get("Message-ID", "")).strip() or "(no Message-ID)"
        with self.lock:
            self.counts[message_id] += 1
            self.arrivals.append((time.monotonic(), message_id))
        return "250 2.0.0 Accepted"


class ChaosSink:
    """Listens on 127.0.0.1 on a free port until ``stop``."""

    def __init__(self, rcpt_delay: float = 0.04) -> None:
        self.port = free_port()
        self._handler = _Handler(rcpt_delay)
        self._controller = Controller(
            self._handler, hostname="127.0.0.1", port=self.port, server_hostname=HOSTNAME
        )
        self._controller.start()

    def counts(self) -> Counter[str]:
        """How many copies of each Message-ID arrived so far."""
        with self._handler.lock:
            return Counter(self._handler.counts)

    def arrivals(self) -> list[tuple[float, str]]:
        with self._handler.lock:
            return list(self._handler.arrivals)

    def stop(self) -> None:
        self._controller.stop()
