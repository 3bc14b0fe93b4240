"""End a socket's blocking calls when its attempt runs out of time.

A socket timeout bounds each read, not an exchange: a relay that answers a byte at a
time, or keeps a session half-open, could hold an attempt for ever. The pool's threads
cannot be killed, so one watchdog thread per process shuts down the socket of an
attempt past its deadline; the blocked call then fails at once (docs/design.md, "The
worker's pool").
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(order=True)
class _Watch:
    deadline: float
    seq: int
    sock: Callable[[], socket.socket | None] = field(compare=False)
    active: bool = field(default=True, compare=False)


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Watch] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, deadline: float, sock: Callable[[], socket.socket | None]) -> Iterator[None]:
        """Shut down ``sock()`` (whatever socket it gives then) if the block is still
        running at ``deadline`` (``time.monotonic``)."""
        watch = _Watch(deadline, next(self._seq), sock)
        with self._cond:
            heapq.heappush(self._heap, watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            watch.active = False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                first = self._heap[0]
                left = first.deadline - time.monotonic()
                if first.active and left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
            if first.active:
                target = first.sock()
                if target is not None:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_RDWR)


watchdog = Watchdog()
