"""A TCP proxy that puts a relay some milliseconds away: ``make bench`` drains through it
to an SMTP sink on loopback, as if the relay sat across a network.

Every chunk read from either side is written to the other ``delay_s`` after it was read
(the one-way delay: 25 ms each way is a 50 ms round trip). Chunks are not serialized
behind one another: one read at t goes out at t + delay whatever else is in flight, in
the order read, so the delay adds latency and never caps throughput. A connection to
the proxy reaches the sink three one-way delays after it was accepted, so a new session
costs what TCP's handshake and the server's greeting would (the greeting arrives two
round trips after connect()), and a close travels with the same delay as the data.

It runs on an asyncio loop in a background thread of the calling process, and only
ever on loopback: it listens on 127.0.0.1 and refuses any other target.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import threading
from typing import cast

LOOPBACK = "127.0.0.1"


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the latency proxy only runs on loopback, not {host!r}")


class _Direction:
    """One direction of a connection: chunks queued with the time each is due, written
    to ``transport`` in order as each comes due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self._loop = loop
        self._delay = delay_s
        # (due, chunk); a chunk of None is the close that follows a direction's last one
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None  # set once that side is connected

    def push(self, chunk: bytes | None) -> None:
        self._queue.append((self._loop.time() + self._delay, chunk))
        if self._timer is None and self.transport is not None:
            self._arm()

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self._queue and self._timer is None:
            self._arm()

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self._queue[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        transport = self.transport
        assert transport is not None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, chunk = self._queue.popleft()
            if chunk is None:
                self._queue.clear()
                transport.close()
                return
            if not transport.is_closing():
                transport.write(chunk)
        if self._queue:
            self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


class _Side(asyncio.Protocol):
    """One of a connection's two sockets: what it reads goes out through ``outbound``."""

    def __init__(
        self, outbound: _Direction, inbound: _Direction, sides: set[_Side] | None = None
    ) -> None:
        self.outbound = outbound  # toward the other side
        self.inbound = inbound  # toward this side
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self._sides = sides  # the proxy's open sockets, this one among them
        if sides is not None:
            sides.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inbound.attach(self.transport)

    def data_received(self, data: bytes) -> None:
        self.outbound.push(bytes(data))

    def eof_received(self) -> bool | None:
        return None  # close this side; connection_lost passes it on

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbound.cancel()
        self.outbound.push(None)
        if self._sides is not None:
            self._sides.discard(self)

    # The other side's writes are buffered beyond its high-water mark: stop reading here.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class LatencyProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``target_port`` on loopback,
    ``one_way_delay_s`` added to every chunk in each direction."""

    def __init__(
        self, target_port: int, one_way_delay_s: float, target_host: str = LOOPBACK
    ) -> None:
        _require_loopback(target_host)
        if one_way_delay_s < 0:
            raise ValueError("the delay cannot be negative")
        self.target = (target_host, target_port)
        self.delay_s = one_way_delay_s
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._sides: set[_Side] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"latency-proxy-{target_port}", daemon=True
        )
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        sockets = self._server.sockets
        self.port: int = sockets[0].getsockname()[1]

    @property
    def rtt_ms(self) -> float:
        return self.delay_s * 2000

    async def _listen(self) -> asyncio.Server:
        return await self._loop.create_server(self._accept, LOOPBACK, 0, backlog=256)

    def _accept(self) -> _Side:
        loop = self._loop
        to_target, to_client = _Direction(loop, self.delay_s), _Direction(loop, self.delay_s)
        client = _Side(outbound=to_target, inbound=to_client, sides=self._sides)
        target = _Side(outbound=to_client, inbound=to_target, sides=self._sides)
        client.peer, target.peer = target, client
        self.connections += 1

        async def connect() -> None:
            # SYN there, SYN-ACK back, ACK there: the server accepts 3 one-way delays
            # after the client's connect() began.
            await asyncio.sleep(3 * self.delay_s)
            try:
                await loop.create_connection(lambda: target, *self.target)
            except OSError:
                self._sides.discard(target)
                if client.transport is not None:
                    client.transport.close()

        task = loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client

    def stop(self) -> None:
        if not self._loop.is_running():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for side in list(self._sides):
                side.inbound.cancel()
                if side.transport is not None:
                    side.transport.abort()
            self._sides.clear()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
