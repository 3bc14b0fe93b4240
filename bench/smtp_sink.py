"""An SMTP server that accepts every mail and only counts them, in its own process.

aiosmtpd speaks real SMTP (EHLO, MAIL, RCPT, DATA, QUIT) on loopback; the handler
keeps no message, only how many arrived and when the first and the last did, in
shared memory the orchestrator reads without a round trip.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

from devtools.procs import free_port, wait_for


class _CountingHandler:
    def __init__(
        self, count: Synchronized[int], first: Synchronized[float], last: Synchronized[float]
    ) -> None:
        self._count = count
        self._first = first
        self._last = last

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # Offer RFC 2920 PIPELINING, as production MTAs (Postfix, Exim, SES) do.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        now = time.time()
        with self._count.get_lock():
            self._count.value += 1
            if not self._first.value:
                self._first.value = now
            self._last.value = now
        return "250 2.0.0 Accepted"


def _serve(
    port: int,
    count: Synchronized[int],
    first: Synchronized[float],
    last: Synchronized[float],
    ready: Event,
    stop: Event,
) -> None:
    import uvloop
    from aiosmtpd.controller import Controller

    # server_hostname: otherwise every session looks up the machine's FQDN. uvloop, as
    # the API runs on: the sink shares the 2 cores with the worker it waits for, and a
    # production MTA answers in far less time than asyncio's loop takes (docs/performance.md).
    controller = Controller(
        _CountingHandler(count, first, last),
        loop=uvloop.new_event_loop(),
        hostname="127.0.0.1",
        port=port,
        server_hostname="sink.bench.local",
    )
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SmtpSink:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self._count: Synchronized[int] = ctx.Value("q", 0)
        self._first: Synchronized[float] = ctx.Value("d", 0.0)
        self._last: Synchronized[float] = ctx.Value("d", 0.0)
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=_serve,
            args=(self.port, self._count, self._first, self._last, self._ready, self._stop),
            name="smtp-sink",
            daemon=True,
        )
        self._process.start()
        wait_for(self._ready.is_set, timeout=30, what="the SMTP sink to listen")
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    @property
    def count(self) -> int:
        return int(self._count.value)

    def window(self) -> tuple[float, float]:
        """Wall-clock times (epoch seconds) of the first and the last mail since reset."""
        with self._count.get_lock():
            return float(self._first.value), float(self._last.value)

    def reset(self) -> None:
        with self._count.get_lock():
            self._count.value = 0
            self._first.value = 0.0
            self._last.value = 0.0

    def stop(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
