"""The project's API with pyinstrument attached: ``uvicorn bench.profiled_api:app``.

For ``python -m bench.profile`` only, never for the figures of ``make bench``. Once
``$BENCH_PROFILE_DELAY`` seconds have passed after start-up (the warm-up: first
connections, lazy imports), the event-loop thread is profiled until shutdown, timed by
its CPU clock; everything a submission costs runs there, its publish included
(api_service.dispatch). At shutdown the session is saved to
``$BENCH_PROFILE_OUT-loop.pyisession``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

from api_service.main import app
from bench import profiling

_OUT = os.environ["BENCH_PROFILE_OUT"]
_DELAY = float(os.environ.get("BENCH_PROFILE_DELAY", "0"))

_original_lifespan = app.router.lifespan_context


@asynccontextmanager
async def _profiled_lifespan(asgi_app: Any) -> AsyncIterator[Any]:
    async with _original_lifespan(asgi_app) as state:
        loop_profiler: list[Profiler] = []

        def start() -> None:
            loop_profiler.append(profiling.start_cpu_profiler())

        asyncio.get_running_loop().call_later(_DELAY, start)
        try:
            yield state
        finally:
            # At shutdown, once: blocking is fine here.
            session = loop_profiler[0].stop() if loop_profiler else None
            profiling.save(session, Path(f"{_OUT}-loop.pyisession"))


app.router.lifespan_context = _profiled_lifespan

__all__ = ["app"]
