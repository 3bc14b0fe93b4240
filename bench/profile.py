"""``python -m bench.profile``: where the time goes, measured with pyinstrument.

Runs the same stack as ``make bench`` (redis-server, the counting SMTP sink, k6) with
profiled variants of the project's processes, and writes text reports to
bench/results/profile/:

- api-enqueue-loop.txt: the API's event-loop thread under the enqueue load
  (64 connections), where all of a submission's work runs, its publish included;
- api-status-loop.txt: the event-loop thread under the status-read load;
- worker-child.txt: the pool process running email.send (1 node, 1 process, a backlog
  of real mails), and worker-main.txt: the node's main process (the consumer);
- send-task.txt: a bare send_task loop, the publish floor.

Samples are timed by each thread's CPU clock (bench.profiling), so waiting is not
counted as work. The profiler slows Python code down (several times for call-heavy
code), so read the shares, not the absolute times; the unprofiled CPU per request and
per task are in bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench import profiling
from bench.procs import start_uvicorn, start_workers
from bench.run import FULL, MAIL, PROJECT_DB, RETRY_POLICY, Bench, Params, PublishOnly
from devtools.procs import ROOT
from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL, task_routes


def _report(sessions: list[Path], out: Path, title: str, per: int | None = None) -> str:
    session = profiling.load_all(p for p in sessions if p.is_file())
    if session is None:
        text = f"# {title}\n\nno profile was written\n"
    else:
        text = profiling.render(session, title, per)
    out.write_text(text)
    return text


def _send_task_profile(bench: Bench, calls: int, out: Path) -> None:
    app = PublishOnly("bench-floor", broker=bench.url(3), set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_routes=task_routes())
    kwargs = {"email": MAIL}
    try:
        for _ in range(20):
            app.send_task(SEND_EMAIL, kwargs=kwargs, task_id=str(uuid.uuid4()))
        profiler = profiling.start_cpu_profiler()
        for _ in range(calls):
            app.send_task(
                SEND_EMAIL,
                kwargs=kwargs,
                task_id=str(uuid.uuid4()),
                retry=True,
                retry_policy=RETRY_POLICY,
            )
        session = profiler.stop()
    finally:
        app.close()
    bench.client(3).flushdb()
    out.write_text(profiling.render(session, "Bare send_task loop (no result backend)", calls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile")
    parser.add_argument("--seconds", type=float, default=10.0, help="each profiled load phase")
    parser.add_argument("--mails", type=int, default=1000, help="mails the profiled worker sends")
    parser.add_argument("--keep-sessions", action="store_true", help="keep the raw sessions")
    args = parser.parse_args(argv)
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    params = Params(
        **{
            **FULL.__dict__,
            "mode": "profile",
            "duration_s": args.seconds,
            "status_duration_s": args.seconds,
            "drain_mails": args.mails,
            "e2e_samples": 100,
            "e2e_rate": 50,
        }
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    # The raw sessions (hundreds of MB), for `pyinstrument --load <file>` (html,
    # speedscope, ...), kept only with --keep-sessions.
    sessions = out / "sessions" if args.keep_sessions else work / "sessions"
    shutil.rmtree(sessions, ignore_errors=True)
    sessions.mkdir()
    delay = {"BENCH_PROFILE_DELAY": str(params.warmup_s + 1.5)}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        bench = Bench(params, out, work, stack)
        env = bench.project_env()
        client = bench.client(PROJECT_DB)

        def step(text: str) -> None:
            print(f"[profile {time.strftime('%H:%M:%S')}] {text}", flush=True)

        step("send_task loop")
        _send_task_profile(bench, 3000, out / "send-task.txt")

        step("API under the enqueue load")
        enqueue = sessions / "api-enqueue"
        api, url = start_uvicorn(
            "profiled-api-enqueue",
            "bench.profiled_api:app",
            {**env, **delay, "BENCH_PROFILE_OUT": str(enqueue)},
            bench.logs,
        )
        with bench.running([api]):
            bench.enqueue_phase("project", api, url)
        _report(
            [Path(f"{enqueue}-loop.pyisession")],
            out / "api-enqueue-loop.txt",
            "API event-loop thread, POST /send-email at 64 connections (publishing included)",
        )

        step("finished tasks to read")
        api, url = start_uvicorn("api", "api_service.main:app", env, bench.logs)
        with bench.running([api]):
            client.delete(EMAIL_QUEUE)
            workers = start_workers(
                "worker_service", ["profile-e2e"], 2, env, bench.logs, bench.metrics_dir
            )
            with bench.running(workers):
                ids = bench.end_to_end("project", url, PROJECT_DB)

        step("API under the status-read load")
        status = sessions / "api-status"
        api, url = start_uvicorn(
            "profiled-api-status",
            "bench.profiled_api:app",
            {**env, **delay, "BENCH_PROFILE_OUT": str(status)},
            bench.logs,
        )
        with bench.running([api]):
            bench.status_phase("project", api, url, ids)
        _report(
            [Path(f"{status}-loop.pyisession")],
            out / "api-status-loop.txt",
            "API event-loop thread, GET /task-status at 64 connections",
        )

        step(f"worker draining {args.mails} mails (1 node, 1 process)")
        worker = sessions / "worker"
        bench.extra_env = {"BENCH_PROFILE_OUT": str(worker)}
        api, url = start_uvicorn("api-fill", "api_service.main:app", env, bench.logs)
        with bench.running([api]):
            bench.project_drain(url, 1, 1, worker_app="bench.profiled_worker")
        _report(
            sorted(sessions.glob("worker-child-*.pyisession")),
            out / "worker-child.txt",
            "Worker pool process: email.send with real SMTP",
            args.mails,
        )
        _report(
            [Path(f"{worker}-main.pyisession")],
            out / "worker-main.txt",
            "Worker main process (consumer)",
            args.mails,
        )
        for error in bench.errors:
            print(f"ERROR: {error}", file=sys.stderr)
    print(f"wrote {out}/*.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
