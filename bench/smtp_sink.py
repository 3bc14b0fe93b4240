"""The SMTP servers the benchmark sends to: each accepts every mail and only counts it,
in its own process.

Two servers, both speaking real SMTP on loopback (EHLO, MAIL, RCPT, DATA, QUIT, with
RFC 2920 PIPELINING):

- ``minimal`` (the default): ``_SinkProtocol`` below, an asyncio protocol on uvloop that
  answers each command without parsing it. The drains measure the worker, and the SMTP
  server shares the machine's 2 cores with it and sits in its critical path: the worker
  waits for every reply. A production MTA answers in a few tens of µs of C;
- ``aiosmtpd``: aiosmtpd's server, which the tests use: 330-440 µs of Python per mail
  on the 2-core machine, 5-7 times the minimal one. The benchmark also drains through
  it, for comparison.

Neither keeps a message: the count, the times of the first and the last mail, and the
arrival time of each of the first ``ARRIVALS`` mails since the last reset live in shared
memory the orchestrator reads without a round trip.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.sharedctypes import SynchronizedArray as SharedArray
from multiprocessing.synchronize import Event
from typing import Any, Literal, cast

from devtools.procs import free_port, wait_for

ServerKind = Literal["minimal", "aiosmtpd"]
HOSTNAME = "sink.bench.local"
# Arrival times kept per reset (8 bytes each); mails beyond it are counted, not timed.
ARRIVALS = 65536

_EHLO = (
    f"250-{HOSTNAME}\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    "250-PIPELINING\r\n250 HELP\r\n"
).encode()
_REPLIES = {
    b"HELO": f"250 {HOSTNAME}\r\n".encode(),
    b"MAIL": b"250 OK\r\n",
    b"RCPT": b"250 OK\r\n",
    b"RSET": b"250 OK\r\n",
    b"NOOP": b"250 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
}
_ACCEPTED = b"250 2.0.0 Accepted\r\n"


class _Counter:
    def __init__(
        self,
        count: Synchronized[int],
        first: Synchronized[float],
        last: Synchronized[float],
        arrivals: SharedArray[float],
    ) -> None:
        self._count = count
        self._first = first
        self._last = last
        self._arrivals = arrivals

    def __call__(self) -> None:
        now = time.time()
        with self._count.get_lock():
            if self._count.value < ARRIVALS:
                self._arrivals[self._count.value] = now
            self._count.value += 1
            if not self._first.value:
                self._first.value = now
            self._last.value = now


class _SinkProtocol(asyncio.Protocol):
    """One SMTP session: each command line answered in order, pipelined ones together,
    and the mail's data skipped up to the line holding only "." (RFC 5321 §4.1.1.4)."""

    def __init__(self, on_mail: Callable[[], None]) -> None:
        self._on_mail = on_mail
        self._buffer = bytearray()
        self._in_data = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but is one.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(f"220 {HOSTNAME} ESMTP\r\n".encode())

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buffer = self._buffer
        buffer += data
        replies = bytearray()
        start = 0
        while True:
            if self._in_data:
                # Searched from the DATA line's own CRLF, so an empty mail ends too.
                found = buffer.find(b"\r\n.\r\n", start)
                if found < 0:
                    start = max(start, len(buffer) - 4)  # what could begin the marker
                    break
                start = found + 5
                self._in_data = False
                self._on_mail()
                replies += _ACCEPTED
                continue
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            verb = bytes(buffer[start : start + 4]).upper()
            start = end + 2
            if verb == b"EHLO":
                replies += _EHLO
            elif verb == b"QUIT":
                self._transport.write(bytes(replies) + b"221 Bye\r\n")
                self._transport.close()
                return
            elif verb == b"DATA":
                replies += _REPLIES[verb]
                self._in_data = True
                start = end
            else:
                replies += _REPLIES.get(verb, b"502 Command not implemented\r\n")
        del buffer[:start]
        if replies:
            self._transport.write(bytes(replies))


class _AiosmtpdHandler:
    def __init__(self, on_mail: Callable[[], None]) -> None:
        self._on_mail = on_mail

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # Offer RFC 2920 PIPELINING, as production MTAs (Postfix, Exim, SES) do.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self._on_mail()
        return "250 2.0.0 Accepted"


def _serve(
    kind: ServerKind,
    port: int,
    count: Synchronized[int],
    first: Synchronized[float],
    last: Synchronized[float],
    arrivals: SharedArray[float],
    ready: Event,
    stop: Event,
) -> None:
    import uvloop

    on_mail = _Counter(count, first, last, arrivals)
    if kind == "aiosmtpd":
        from aiosmtpd.controller import Controller

        # server_hostname: otherwise every session looks up the machine's FQDN.
        controller = Controller(
            _AiosmtpdHandler(on_mail),
            loop=uvloop.new_event_loop(),
            hostname="127.0.0.1",
            port=port,
            server_hostname=HOSTNAME,
        )
        controller.start()
        ready.set()
        stop.wait()
        controller.stop()
        return

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _SinkProtocol(on_mail), "127.0.0.1", port, backlog=256
        )
        ready.set()
        await loop.run_in_executor(None, stop.wait)
        server.close()

    uvloop.run(serve())


class SmtpSink:
    def __init__(self, kind: ServerKind = "minimal") -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.port = free_port()
        self._count: Synchronized[int] = ctx.Value("q", 0)
        self._first: Synchronized[float] = ctx.Value("d", 0.0)
        self._last: Synchronized[float] = ctx.Value("d", 0.0)
        # Written under _count's lock (no lock of its own).
        self._arrivals: SharedArray[float] = ctx.Array("d", ARRIVALS, lock=False)
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=_serve,
            args=(
                kind,
                self.port,
                self._count,
                self._first,
                self._last,
                self._arrivals,
                self._ready,
                self._stop,
            ),
            name=f"smtp-sink-{kind}",
            daemon=True,
        )
        self._process.start()
        wait_for(self._ready.is_set, timeout=30, what=f"the SMTP sink ({kind}) to listen")
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    @property
    def count(self) -> int:
        return int(self._count.value)

    def window(self) -> tuple[float, float]:
        """Wall-clock times (epoch seconds) of the first and the last mail since reset."""
        with self._count.get_lock():
            return float(self._first.value), float(self._last.value)

    def arrivals(self) -> list[float]:
        """Wall-clock times (epoch seconds) of each mail since reset, in arrival order
        (the first ``ARRIVALS`` of them)."""
        with self._count.get_lock():
            return list(self._arrivals[: min(int(self._count.value), ARRIVALS)])

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
