"""The project's API with pyinstrument attached: ``uvicorn bench.profiled_api:app``.

For ``python -m bench.profile`` only, never for the figures of ``make bench``. Once
``$BENCH_PROFILE_DELAY`` seconds have passed after start-up (the warm-up: first
connections, lazy imports), the event-loop thread is profiled until shutdown, and so is
every batch publish, which the API runs in its publish threads, each on its own thread. Both are
timed by the thread's CPU clock. At shutdown the sessions are saved to
``$BENCH_PROFILE_OUT-loop.pyisession`` and ``$BENCH_PROFILE_OUT-publish.pyisession``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.session import Session

from api_service.main import app
from api_service.publisher import BatchPublisher
from api_service.submissions import Submission
from bench import profiling

_OUT = os.environ["BENCH_PROFILE_OUT"]
_DELAY = float(os.environ.get("BENCH_PROFILE_DELAY", "0"))
_sessions: list[Session] = []
_lock = threading.Lock()
_on = threading.Event()
_submissions = 0
_original_publish = BatchPublisher.publish


def _profiled_publish(self: BatchPublisher, batch: Sequence[Submission]) -> None:
    global _submissions
    if not _on.is_set():
        _original_publish(self, batch)
        return
    profiler = profiling.start_cpu_profiler()
    try:
        _original_publish(self, batch)
    finally:
        session = profiler.stop()
        with _lock:
            _sessions.append(session)
            _submissions += len(batch)


BatchPublisher.publish = _profiled_publish  # type: ignore[method-assign]

_original_lifespan = app.router.lifespan_context


@asynccontextmanager
async def _profiled_lifespan(asgi_app: Any) -> AsyncIterator[Any]:
    async with _original_lifespan(asgi_app) as state:
        loop_profiler: list[Profiler] = []

        def start() -> None:
            loop_profiler.append(profiling.start_cpu_profiler())
            _on.set()

        asyncio.get_running_loop().call_later(_DELAY, start)
        try:
            yield state
        finally:
            _on.clear()
            _save(loop_profiler[0].stop() if loop_profiler else None)


def _save(loop: Session | None) -> None:
    """At shutdown, once: blocking is fine here."""
    profiling.save(loop, Path(f"{_OUT}-loop.pyisession"))
    with _lock:
        sessions = list(_sessions)
    profiling.save(profiling.combine(sessions), Path(f"{_OUT}-publish.pyisession"))
    Path(f"{_OUT}-publish.count").write_text(str(_submissions))


app.router.lifespan_context = _profiled_lifespan

__all__ = ["app"]
