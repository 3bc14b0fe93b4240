"""Batches against single submissions: mails accepted per second, the same API, one run.

``POST /send-email`` from many connections (bench/k6/enqueue.js), then
``POST /send-email/batch`` with 500 mails a request (bench/k6/batch.js), back to back
against the same API process and Redis; the ratio of the two rates must be at least
``REQUIRED_RATIO`` (issue 18). ``make bench`` runs it in the project's round
(bench.run); ``python -m bench.batch_phase`` runs it alone, on its own Redis and API.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from bench.loadgen import K6Run, run_k6
from bench.procs import start_redis, start_uvicorn
from shared_schemas.tasks import EMAIL_QUEUE

REQUIRED_RATIO = 10.0
BATCH = 500
BATCH_VUS = 2  # requests in flight: each is 500 mails of work on two cores
API_KEY = "bench-key"


@dataclass(frozen=True)
class BatchFigures:
    single_mails_per_s: float
    single_p99_ms: float | None
    batch_mails_per_s: float
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    api_cpu_us_per_single_mail: float
    api_cpu_us_per_batched_mail: float
    bad_answers: int

    @property
    def ratio(self) -> float:
        return self.batch_mails_per_s / max(self.single_mails_per_s, 1e-9)

    def as_figures(self) -> dict[str, float | None]:
        """Named as bench.run names its figures (``project.…``)."""
        return {
            "project.batch_single_mails_per_s": self.single_mails_per_s,
            "project.batch_mails_per_s": self.batch_mails_per_s,
            "project.batch_p99_ms": self.batch_p99_ms,
            "project.batch_ratio": self.ratio,
            "project.batch_cpu_us_per_mail": self.api_cpu_us_per_batched_mail,
        }

    def verdict(self) -> str | None:
        """None when the target holds, else what failed."""
        if self.bad_answers:
            return f"batch phase: {self.bad_answers} unexpected answers"
        if self.ratio < REQUIRED_RATIO:
            return (
                f"batch phase: batches accepted {self.batch_mails_per_s:.0f} mails/s, single "
                f"submissions {self.single_mails_per_s:.0f}: {self.ratio:.1f}x, under "
                f"{REQUIRED_RATIO:g}x"
            )
        return None

    def line(self) -> str:
        return (
            f"batches of {BATCH}: {self.batch_mails_per_s:,.0f} mails/s (p99 "
            f"{self.batch_p99_ms or 0:.0f} ms a request) vs single submissions "
            f"{self.single_mails_per_s:,.0f}/s: {self.ratio:.1f}x (target >= "
            f"{REQUIRED_RATIO:g}x); API CPU {self.api_cpu_us_per_batched_mail:.0f} µs a "
            f"batched mail, {self.api_cpu_us_per_single_mail:.0f} µs a single one"
        )


def measure(
    base_url: str,
    api_cpu: Callable[[], float],
    logs: Path,
    seconds: float,
    *,
    vus: int = 64,
    warmup: bool = True,
    broker: redis.Redis | None = None,
    env: Mapping[str, str] | None = None,
) -> BatchFigures:
    """Single submissions for ``seconds`` from ``vus`` connections, then batches for as
    long, each after a second's warm-up if ``warmup``; the queue is emptied after each
    run if ``broker``."""
    base = {"BASE_URL": base_url, "API_KEY": API_KEY, **(env or {})}
    duration = f"{max(1000, round(seconds * 1000))}ms"
    timeout = seconds + 120

    def k6(script: str, name: str, extra: dict[str, str]) -> tuple[K6Run, float]:
        cpu0 = api_cpu()
        run = run_k6(script, {**base, **extra}, logs / f"k6-{name}.json", timeout=timeout)
        if broker is not None:
            broker.delete(EMAIL_QUEUE)  # a backlog would slow the next phase's Redis
        return run, api_cpu() - cpu0

    if warmup:
        k6("enqueue.js", "batch-single-warmup", {"VUS": str(vus), "DURATION": "1000ms"})
    single, single_cpu = k6("enqueue.js", "batch-single", {"VUS": str(vus), "DURATION": duration})
    if warmup:
        warm = {"VUS": str(BATCH_VUS), "DURATION": "1000ms", "BATCH": str(BATCH)}
        k6("batch.js", "batch-warmup", warm)
    batches, batch_cpu = k6(
        "batch.js", "batch", {"VUS": str(BATCH_VUS), "DURATION": duration, "BATCH": str(BATCH)}
    )
    singles = single.count("enqueue_ok")
    mails = batches.count("mails_ok")
    return BatchFigures(
        single_mails_per_s=single.rate("enqueue_ok", single.duration_s),
        single_p99_ms=single.trend("enqueue_ms", "p(99)"),
        batch_mails_per_s=batches.rate("mails_ok", batches.duration_s),
        batch_p50_ms=batches.trend("batch_ms", "med"),
        batch_p99_ms=batches.trend("batch_ms", "p(99)"),
        api_cpu_us_per_single_mail=single_cpu / max(singles, 1) * 1e6,
        api_cpu_us_per_batched_mail=batch_cpu / max(mails, 1) * 1e6,
        bad_answers=single.count("enqueue_bad") + batches.count("batch_bad"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_phase", description=__doc__)
    parser.add_argument("--duration", type=float, default=10, help="seconds of each phase")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-batch-")))
        redis_proc, port = start_redis(work)
        stack.callback(redis_proc.stop)
        url = f"redis://127.0.0.1:{port}/0"
        env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url, "API_KEYS": API_KEY}
        api, base_url = start_uvicorn("batch-api", "api_service.main:app", env, work)
        stack.callback(api.stop)
        broker = redis.Redis(port=port)
        stack.callback(broker.close)
        figures = measure(base_url, api.cpu, work, args.duration, broker=broker)
    print(json.dumps({**asdict(figures), "ratio": figures.ratio}, indent=2))
    print(figures.line())
    failed = figures.verdict()
    if failed:
        print(f"ERROR: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
