"""A TCP proxy to Redis that can lose the API's next publishes: Redis runs each one
(or never sees it) and the connection drops before its reply, so the API cannot know
whether its message was queued. Everything else passes through."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class LossyRedisProxy:
    def __init__(self, redis_port: int) -> None:
        self._redis_port = redis_port
        self._lose = 0
        self._forward = True
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    def lose_publishes(self, count: int, *, redis_runs_them: bool) -> None:
        with self._lock:
            self._lose, self._forward = count, redis_runs_them

    @property
    def publishes_left_to_lose(self) -> int:
        with self._lock:
            return self._lose

    def _take_loss(self) -> bool | None:
        """None to pass a publish on; else whether Redis gets to run the lost one."""
        with self._lock:
            if self._lose <= 0:
                return None
            self._lose -= 1
            return self._forward

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        started.set()
        self._loop.run_forever()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self._redis_port)

        async def replies() -> None:
            while data := await redis_r.read(65536):
                client_w.write(data)
                await client_w.drain()

        relay = asyncio.create_task(replies())
        try:
            while data := await client_r.read(65536):
                # The API's publish script carries kombu's LPUSH among its arguments.
                loss = self._take_loss() if b"LPUSH" in data.upper() else None
                if loss is not None:
                    relay.cancel()
                    if loss:
                        redis_w.write(data)
                        await redis_w.drain()
                        await redis_r.read(65536)  # Redis ran it; the reply goes nowhere
                    break
                redis_w.write(data)
                await redis_w.drain()
        finally:
            relay.cancel()
            client_w.close()
            redis_w.close()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def lossy_proxy(redis_port: int) -> Iterator[LossyRedisProxy]:
    proxy = LossyRedisProxy(redis_port)
    try:
        yield proxy
    finally:
        proxy.close()
