"""The project's worker with pyinstrument attached: ``celery -A bench.profiled_worker``.

For ``python -m bench.profile`` only. Each pool process is profiled (by its CPU clock)
from the moment it starts to the moment it exits, and saves its session to
``$BENCH_PROFILE_OUT-child-<pid>.pyisession``; the main process (the consumer: it
fetches messages, hands them to the pool, acknowledges them) likewise to
``$BENCH_PROFILE_OUT-main.pyisession``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from pyinstrument import Profiler

from bench import profiling
from worker_service import app

_OUT = os.environ["BENCH_PROFILE_OUT"]
_profilers: dict[str, Profiler] = {}


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_child(**_: Any) -> None:
    _profilers["child"] = profiling.start_cpu_profiler()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_child(**_: Any) -> None:
    profiler = _profilers.pop("child", None)
    if profiler is not None:
        path = Path(f"{_OUT}-child-{os.getpid()}.pyisession")
        profiling.save(profiler.stop(), path)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_main(**_: Any) -> None:
    _profilers["main"] = profiling.start_cpu_profiler()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_main(**_: Any) -> None:
    profiler = _profilers.pop("main", None)
    if profiler is not None:
        profiling.save(profiler.stop(), Path(f"{_OUT}-main.pyisession"))


__all__ = ["app"]
