"""The project's API with pyinstrument attached: ``uvicorn bench.profiled_api:app``.

For ``python -m bench.profile`` only, never for the figures of ``make bench``. Once
``$BENCH_PROFILE_DELAY`` seconds have passed after start-up (the warm-up: first
connections, lazy imports), the event-loop thread is profiled until shutdown, and so is
every publish, which the API runs in a worker thread, each on its own thread. Both are
timed by the thread's CPU clock. At shutdown the sessions are saved to
``$BENCH_PROFILE_OUT-loop.pyisession`` and ``$BENCH_PROFILE_OUT-publish.pyisession``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.session import Session

from api_service.dispatch import Dispatcher
from api_service.main import app
from bench import profiling

_OUT = os.environ["BENCH_PROFILE_OUT"]
_DELAY = float(os.environ.get("BENCH_PROFILE_DELAY", "0"))
_sessions: list[Session] = []
_lock = threading.Lock()
_on = threading.Event()
_original_submit = Dispatcher._submit


def _profiled_submit(self: Dispatcher, *args: Any, **kwargs: Any) -> None:
    if not _on.is_set():
        _original_submit(self, *args, **kwargs)
        return
    profiler = profiling.start_cpu_profiler()
    try:
        _original_submit(self, *args, **kwargs)
    finally:
        session = profiler.stop()
        with _lock:
            _sessions.append(session)


Dispatcher._submit = _profiled_submit  # type: ignore[method-assign]

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
    Path(f"{_OUT}-publish.count").write_text(str(len(sessions)))


app.router.lifespan_context = _profiled_lifespan

__all__ = ["app"]
