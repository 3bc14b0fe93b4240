"""``make chaos``: a soak under faults that counts every mail.

    python -m devtools.chaos [--mails 1000] [--rate 40] [--seed N] [--nodes 3]

Starts, as local processes: redis-server (AOF, fsync always), an SMTP sink that
answers each RCPT after 40 ms and records every Message-ID it receives
(devtools/chaos_sink.py), the API under uvicorn and ``--nodes`` worker nodes, each the
shipped ``celery -A worker_service worker`` in its own process group. It submits
``--mails`` mails at about ``--rate`` per second through ``POST /send-email``, each with
its own ``Idempotency-Key`` (a 503 or a connection error is retried with the same key),
while it injects faults on a seeded schedule: a node's whole process group SIGKILLed
and started again every ~2.5 s, pool children SIGKILLed (when the pool has any), one
graceful stop (SIGTERM, drain) and restart of a node, one graceful Redis restart.

Then it waits (bounded) until every accepted task is final and the broker holds no
message, and counts: accepted, delivered (seen at the sink), failed with a reason,
lost (accepted, neither delivered nor failed with a reason) and duplicated (a
Message-ID received more than once). The bar is 0 lost and 0 duplicated; the exit
status is 1 otherwise. Logs stay in var/chaos/<time>/ (or ``--log-dir``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from devtools.chaos_sink import ChaosSink
from devtools.procs import BIN, ROOT, Proc, free_port, wait_for
from devtools.redis_binary import find_redis_server
from shared_schemas.tasks import queues

MAIL_FROM = "Chaos Soak <soak@chaos.example>"
SENDER_DOMAIN = "chaos.example"
FINAL = ("SUCCESS", "FAILURE", "REVOKED")

Out = Callable[[str], None]


@dataclass(frozen=True)
class ChaosConfig:
    mails: int = 1000
    rate: float = 40.0  # submissions per second
    seed: int | None = None  # None: a random one, printed
    nodes: int = 3
    kill_every: float = 2.5  # seconds between two node SIGKILLs, on average
    pool_child_kills: int = 2
    settle_timeout: float = 120.0  # after the load, the longest wait for every task to end
    clients: int = 16  # client threads
    give_up_after: float = 60.0  # a submission without a 202 for this long is not accepted
    rcpt_delay: float = 0.04
    # Short delays so redeliveries after a SIGKILL finish within the run; the worker
    # insists the visibility timeout exceeds EMAIL_RETRY_MAX_DELAY + TASK_TIME_LIMIT.
    retry_base_delay: float = 0.5
    retry_max_delay: float = 2.0
    task_time_limit: int = 10
    visibility_timeout: int = 20
    max_retries: int = 5
    log_dir: Path | None = None


# How close to a node's SIGKILL a duplicate's first copy must have arrived to count as
# the kill landing between the mail's data and the ledger's write (ChaosReport).
WINDOW = 0.25


@dataclass(frozen=True)
class Fault:
    at: float  # seconds since the load began
    clock: str  # wall clock, HH:MM:SS.mmm
    kind: str
    target: str
    detail: str
    injected: bool = True  # False: a skipped fault or something that happened by itself

    def line(self) -> str:
        return f"[{self.clock} +{self.at:6.2f}s] {self.kind:<18} {self.target:<9} {self.detail}"


@dataclass
class ChaosReport:
    config: ChaosConfig
    log_dir: Path
    submitted: int
    accepted: int
    not_accepted: dict[str, int]  # why a submission never got its 202 -> how many
    client_retries: int  # 503s and connection errors retried with the same key
    delivered: int  # distinct accepted tasks whose Message-ID reached the sink
    failed: dict[str, int]  # error type -> tasks that ended FAILURE/REVOKED with it
    failed_samples: dict[str, str]  # error type -> one message
    lost: list[str]  # task ids: accepted, neither delivered nor failed with a reason
    lost_by_status: dict[str, int]  # their last status
    duplicated: dict[str, int]  # Message-ID -> copies received (> 1)
    duplicate_arrivals: dict[str, list[float]]  # Message-ID -> when each copy came (s)
    unexpected: dict[str, int]  # Message-IDs received of no accepted task
    statuses: dict[str, int]  # last status of every accepted task
    delivered_not_success: dict[str, int]  # delivered, but the status says otherwise
    faults: list[Fault]
    settled: bool  # every task final (or delivered) and the broker empty in time
    settle_seconds: float
    elapsed: float

    @property
    def failed_count(self) -> int:
        return sum(self.failed.values())

    @property
    def extra_copies(self) -> int:
        return sum(count - 1 for count in self.duplicated.values())

    def in_the_window(self) -> dict[str, int]:
        """Duplicates whose first copy reached the sink within WINDOW seconds of a node's
        SIGKILL: the worker was cut off after sending the mail's data and before the
        delivery ledger's write, the window SMTP leaves open (docs/delivery-guarantees.md,
        "The windows that remain", 1 and 2). Any other duplicate is a bug."""
        kills = [f.at for f in self.faults if f.injected and f.kind == "node SIGKILL"]
        return {
            mid: copies
            for mid, copies in self.duplicated.items()
            if any(
                abs(kill - min(self.duplicate_arrivals.get(mid, [-1e9]))) <= WINDOW
                for kill in kills
            )
        }

    @property
    def unexplained_duplicates(self) -> dict[str, int]:
        explained = self.in_the_window()
        return {mid: n for mid, n in self.duplicated.items() if mid not in explained}

    @property
    def ok(self) -> bool:
        """The bar: nothing lost, and no duplicate but in the window SMTP leaves open."""
        return not (
            self.lost or self.unexplained_duplicates or self.not_accepted or self.unexpected
        )

    def injected(self) -> Counter[str]:
        return Counter(fault.kind for fault in self.faults if fault.injected)


@dataclass
class _Submission:
    index: int
    key: str
    task_id: str | None = None
    retries: int = 0
    error: str | None = None


@dataclass(order=True)
class _Planned:
    at: float
    kind: str = field(compare=False)


@dataclass(frozen=True)
class _Seen:
    status: str
    error_type: str | None
    error_message: str | None


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Redis:
    """redis-server with AOF (fsync always), restartable on the same port and data."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.data = log_dir / "redis-data"
        self.data.mkdir()
        self.client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)
        self.starts = 0
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        cmd = [find_redis_server(), *args]
        proc = self.proc = Proc(f"redis.{self.starts}", cmd, {}, self.log_dir)

        def pings() -> bool:
            if not proc.alive():
                raise RuntimeError(f"redis-server exited:\n{proc.log()}")
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_for(pings, timeout=30, what="redis-server to answer PING")

    def stop(self) -> None:
        """SIGTERM: a graceful SHUTDOWN (the AOF is fsynced)."""
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM, timeout=15)


class _Node:
    """One worker node: the shipped worker command, in its own process group."""

    def __init__(self, index: int, env: dict[str, str], log_dir: Path) -> None:
        self.name = f"chaos-{index}"
        self.env = env
        self.log_dir = log_dir
        self.starts = 0
        self.proc: Proc | None = None

    def start(self) -> int:
        self.starts += 1
        cmd = [str(BIN / "celery"), "-A", "worker_service", "worker"]
        cmd += ["--hostname", f"{self.name}@%h", "--loglevel", "INFO"]
        self.proc = Proc(f"{self.name}.{self.starts}", cmd, self.env, self.log_dir)
        return self.proc.pid

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"worker {self.name} exited:\n{self.proc.log()[-3000:]}")
        return " ready." in self.proc.log()

    def kill(self) -> None:
        """SIGKILL the whole process group (the node and any pool children)."""
        assert self.proc is not None
        _killpg(self.pid)
        self.proc.stop(timeout=10)

    def terminate(self, timeout: float) -> float | None:
        """SIGTERM (warm shutdown); the seconds it took to exit, None if it was killed."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.popen.send_signal(signal.SIGTERM)
        try:
            self.proc.popen.wait(timeout)
            took: float | None = time.monotonic() - began
        except subprocess.TimeoutExpired:
            took = None
        _killpg(self.pid)  # nothing of the group may outlive it
        self.proc.stop(timeout=10)
        return took


class _Clients:
    """One httpx client per thread."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self._local = threading.local()
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=10,
            )
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._all:
                client.close()


class _Run:
    def __init__(self, config: ChaosConfig, log_dir: Path, out: Out) -> None:
        assert config.seed is not None
        self.config = config
        self.log_dir = log_dir
        self.out = out
        self.rng = random.Random(config.seed)
        self.stop = threading.Event()
        self.faults_done = threading.Event()
        self.faults: list[Fault] = []
        self.chaos_error: BaseException | None = None
        self.api_key = f"chaos-{random.Random().getrandbits(64):016x}"
        self.t0 = time.monotonic()
        self.redis: _Redis | None = None
        self.sink: ChaosSink | None = None
        self.api: Proc | None = None
        self.nodes: list[_Node] = []
        self.clients: _Clients | None = None
        self.pool = ThreadPoolExecutor(max_workers=config.clients, thread_name_prefix="client")
        self.chaos_thread: threading.Thread | None = None

    # -- the stack ----------------------------------------------------------------

    def _env(self, redis_url: str, smtp_port: int) -> dict[str, str]:
        c = self.config
        return {
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "API_KEYS": self.api_key,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_SECURITY": "none",
            "SMTP_TIMEOUT": "5",
            "MAIL_FROM": MAIL_FROM,
            "EMAIL_MAX_RETRIES": str(c.max_retries),
            "EMAIL_RETRY_BASE_DELAY": str(c.retry_base_delay),
            "EMAIL_RETRY_MAX_DELAY": str(c.retry_max_delay),
            "TASK_TIME_LIMIT": str(c.task_time_limit),
            "CELERY_VISIBILITY_TIMEOUT": str(c.visibility_timeout),
            "WORKER_METRICS_PORT": "0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }

    def start_stack(self) -> None:
        self.redis = _Redis(self.log_dir)
        self.redis.start()
        self.sink = ChaosSink(self.config.rcpt_delay)
        env = self._env(self.redis.url, self.sink.port)
        api_port = free_port()
        cmd = [str(BIN / "uvicorn"), "api_service.main:app", "--host", "127.0.0.1"]
        api = self.api = Proc("api", [*cmd, "--port", str(api_port)], env, self.log_dir)
        base_url = f"http://127.0.0.1:{api_port}"
        self.clients = _Clients(base_url, self.api_key)
        self.nodes = [_Node(i, env, self.log_dir) for i in range(1, self.config.nodes + 1)]
        for node in self.nodes:
            node.start()

        def api_healthy() -> bool:
            if not api.alive():
                raise RuntimeError(f"the API exited:\n{api.log()[-3000:]}")
            try:
                return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(api_healthy, timeout=30, interval=0.1, what="the API to answer /healthz")
        wait_for(
            lambda: all(node.ready() for node in self.nodes),
            timeout=90,
            interval=0.1,
            what="every worker node to be ready",
        )

    def cleanup(self) -> None:
        self.stop.set()
        if self.chaos_thread is not None:
            self.chaos_thread.join(60)
        self.pool.shutdown(wait=True, cancel_futures=True)
        for node in self.nodes:
            if node.alive():
                node.proc.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.popen.wait(self.config.task_time_limit + 5)
                _killpg(node.pid)
                node.proc.stop(timeout=5)
        if self.api is not None:
            self.api.stop()
        if self.clients is not None:
            self.clients.close()
        if self.redis is not None:
            self.redis.stop()
            self.redis.client.close()
        if self.sink is not None:
            self.sink.stop()

    # -- faults -------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def record(self, kind: str, target: str, detail: str, injected: bool = True) -> None:
        fault = Fault(self.elapsed(), _clock(), kind, target, detail, injected)
        self.faults.append(fault)
        self.out(fault.line())

    def plan(self) -> list[_Planned]:
        c, rng = self.config, self.rng
        duration = c.mails / c.rate
        planned = []
        at = c.kill_every
        while at < duration:
            planned.append(_Planned(at + rng.uniform(-0.2, 0.2) * c.kill_every, "kill"))
            at += c.kill_every
        planned += [
            _Planned(rng.uniform(0.1, 0.9) * duration, "pool") for _ in range(c.pool_child_kills)
        ]
        planned.append(_Planned(rng.uniform(0.25, 0.45) * duration, "stop"))
        planned.append(_Planned(rng.uniform(0.55, 0.75) * duration, "redis"))
        return sorted(planned)

    def _kill_node(self) -> None:
        node = self.rng.choice(self.nodes)
        old = node.pid
        node.kill()
        new = node.start()
        self.record("node SIGKILL", node.name, f"process group {old} killed; restarted as {new}")

    def _kill_pool_children(self) -> None:
        candidates = [(n, kids) for n in self.nodes if n.alive() and (kids := _children(n.pid))]
        if not candidates:
            self.record("pool child SIGKILL", "-", "no pool children to kill", injected=False)
            return
        node, kids = self.rng.choice(candidates)
        victims = self.rng.sample(kids, min(len(kids), self.rng.randint(1, 2)))
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.record(
            "pool child SIGKILL", node.name, f"children {victims} of {node.pid} ({len(kids)})"
        )

    def _stop_node(self) -> None:
        node = self.rng.choice(self.nodes)
        old = node.pid
        took = node.terminate(self.config.task_time_limit + 20)
        new = node.start()
        how = f"exited in {took:.2f}s" if took is not None else "did not drain: SIGKILLed"
        self.record("node SIGTERM", node.name, f"{old} {how}; restarted as {new}")

    def _restart_redis(self) -> None:
        assert self.redis is not None
        began = time.monotonic()
        self.redis.stop()
        self.redis.start()
        took = time.monotonic() - began
        self.record("redis restart", "redis", f"SIGTERM (SHUTDOWN); answering after {took:.2f}s")

    def _supervise(self) -> None:
        """A node that exited by itself is started again, as a supervisor would."""
        for node in self.nodes:
            if node.proc is not None and not node.alive() and not self.stop.is_set():
                code = node.proc.popen.returncode
                _killpg(node.pid)
                node.proc.stop()
                new = node.start()
                self.record("exited by itself", node.name, f"rc={code}; restarted as {new}", False)

    def chaos_loop(self, planned: list[_Planned]) -> None:
        actions = {
            "kill": self._kill_node,
            "pool": self._kill_pool_children,
            "stop": self._stop_node,
            "redis": self._restart_redis,
        }
        try:
            while not self.stop.is_set():
                while planned and planned[0].at <= self.elapsed():
                    actions[planned.pop(0).kind]()
                if not planned:
                    self.faults_done.set()
                self._supervise()
                self.stop.wait(0.05)
        except BaseException as exc:
            self.chaos_error = exc
            self.out(f"chaos thread failed: {exc!r}")
            self.faults_done.set()
            raise

    # -- load ---------------------------------------------------------------------

    def submit(self, sub: _Submission) -> None:
        assert self.clients is not None
        client = self.clients.get()
        mail = {
            "to": f"chaos-{sub.index}@example.com",
            "subject": f"chaos soak mail {sub.index}",
            "body": f"Mail {sub.index} of the chaos soak.",
        }
        headers = {"Idempotency-Key": sub.key}
        give_up = time.monotonic() + self.config.give_up_after
        backoff = 0.1
        while not self.stop.is_set():
            try:
                response = client.post("/send-email", json=mail, headers=headers)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 202:
                    sub.task_id = str(response.json()["task_id"])
                    return
                if response.status_code != 503:
                    sub.error = f"HTTP {response.status_code}: {response.text[:120]}"
                    return
                last = "503"
            if time.monotonic() > give_up:
                sub.error = f"no 202 within {self.config.give_up_after:g}s (last: {last})"
                return
            sub.retries += 1
            self.stop.wait(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, 1.0)
        sub.error = "stopped"

    def load(self, subs: list[_Submission]) -> None:
        futures: list[Future[None]] = []
        for sub in subs:
            delay = self.t0 + sub.index / self.config.rate - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            futures.append(self.pool.submit(self.submit, sub))
        wait_all(futures)
        for future in futures:
            future.result()

    # -- settling and counting ----------------------------------------------------

    def status(self, task_id: str) -> _Seen | None:
        assert self.clients is not None
        try:
            response = self.clients.get().get(f"/task-status/{task_id}")
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return _Seen(f"HTTP {response.status_code}", None, None)
        body: dict[str, Any] = response.json()
        error = body.get("error") or {}
        return _Seen(str(body["status"]), error.get("type"), error.get("message"))

    def statuses(self, task_ids: Iterable[str]) -> dict[str, _Seen | None]:
        ids = list(task_ids)
        return dict(zip(ids, self.pool.map(self.status, ids), strict=True))

    def at_sink(self) -> Counter[str]:
        """Copies received per task id (from the Message-ID ``<task_id@domain>``)."""
        assert self.sink is not None
        by_task: Counter[str] = Counter()
        for message_id, copies in self.sink.counts().items():
            by_task[message_id.strip("<>").rpartition("@")[0] or message_id] += copies
        return by_task

    def drained(self) -> bool:
        """No message left in the broker: the queues empty, nothing unacknowledged."""
        assert self.redis is not None
        try:
            client = self.redis.client
            queued = sum(
                client.llen(key)
                for name in queues()
                for key in client.scan_iter(match=f"{name}*", _type="list")
            )
            return queued == 0 and client.hlen("unacked") == 0
        except redis.RedisError:
            return False

    def settle(self, accepted: list[str]) -> bool:
        """Until every accepted task is delivered or final and the broker is empty."""
        deadline = time.monotonic() + self.config.settle_timeout
        final: set[str] = set()
        turn = 0
        while True:
            delivered = self.at_sink()
            pending = [t for t in accepted if t not in delivered and t not in final]
            chunk = pending[turn : turn + 64] or pending[:64]
            turn = turn + 64 if turn + 64 < len(pending) else 0
            for task_id, seen in self.statuses(chunk).items():
                if seen is not None and seen.status in FINAL:
                    final.add(task_id)
            if len(pending) <= len(chunk) and all(t in final for t in chunk) and self.drained():
                return True
            if time.monotonic() > deadline:
                return False
            self.stop.wait(0.5)

    def execute(self) -> ChaosReport:
        c = self.config
        began = time.monotonic()
        self.out(f"chaos: {c.mails} mails at {c.rate:g}/s, {c.nodes} nodes, seed {c.seed}")
        self.out(f"chaos: logs in {self.log_dir}")
        self.start_stack()
        planned = self.plan()
        subs = [_Submission(i, f"chaos-{c.seed}-{self.api_key[-6:]}-{i}") for i in range(c.mails)]
        self.out(f"chaos: stack up in {time.monotonic() - began:.1f}s; load and faults begin")
        self.t0 = time.monotonic()
        self.chaos_thread = threading.Thread(
            target=self.chaos_loop, args=(planned,), name="chaos", daemon=True
        )
        self.chaos_thread.start()
        self.load(subs)
        self.out(f"chaos: load done at +{self.elapsed():.1f}s")
        self.faults_done.wait(120)
        if self.chaos_error is not None:
            raise RuntimeError("the fault injector failed") from self.chaos_error
        accepted = sorted({s.task_id for s in subs if s.task_id is not None})
        settle_began = time.monotonic()
        settled = self.settle(accepted)
        settle_seconds = time.monotonic() - settle_began
        self.out(f"chaos: {'settled' if settled else 'NOT settled'} in {settle_seconds:.1f}s")
        return self.count(subs, accepted, settled, settle_seconds, time.monotonic() - began)

    def count(
        self,
        subs: list[_Submission],
        accepted: list[str],
        settled: bool,
        settle_seconds: float,
        elapsed: float,
    ) -> ChaosReport:
        assert self.sink is not None
        seen = self.statuses(accepted)
        copies = self.at_sink()
        accepted_set = set(accepted)
        failed: Counter[str] = Counter()
        samples: dict[str, str] = {}
        lost: list[str] = []
        lost_by_status: Counter[str] = Counter()
        delivered_not_success: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        for task_id in accepted:
            status = seen[task_id]
            state = status.status if status is not None else "unknown (no answer)"
            statuses[state] += 1
            if copies[task_id]:
                if state != "SUCCESS":
                    delivered_not_success[state] += 1
            elif status is not None and state in ("FAILURE", "REVOKED") and status.error_type:
                failed[status.error_type] += 1
                samples.setdefault(status.error_type, status.error_message or "")
            else:
                lost.append(task_id)
                lost_by_status[state] += 1
        counts = self.sink.counts()
        duplicated = {mid: n for mid, n in counts.items() if n > 1}
        arrivals: dict[str, list[float]] = {mid: [] for mid in duplicated}
        for at, mid in self.sink.arrivals():
            if mid in arrivals:
                arrivals[mid].append(round(at - self.t0, 2))
        unexpected = {
            mid: n
            for mid, n in counts.items()
            if mid.strip("<>").rpartition("@")[0] not in accepted_set
        }
        return ChaosReport(
            config=self.config,
            log_dir=self.log_dir,
            submitted=len(subs),
            accepted=len(accepted),
            not_accepted=dict(Counter(s.error for s in subs if s.error is not None)),
            client_retries=sum(s.retries for s in subs),
            delivered=sum(1 for t in accepted if copies[t]),
            failed=dict(failed),
            failed_samples=samples,
            lost=lost,
            lost_by_status=dict(lost_by_status),
            duplicated=duplicated,
            duplicate_arrivals=arrivals,
            unexpected=unexpected,
            statuses=dict(statuses),
            delivered_not_success=dict(delivered_not_success),
            faults=list(self.faults),
            settled=settled,
            settle_seconds=settle_seconds,
            elapsed=elapsed,
        )


def run_chaos(config: ChaosConfig, out: Out = print) -> ChaosReport:
    """Run the soak; the stack is stopped whatever happens."""
    if config.seed is None:
        config = replace(config, seed=random.SystemRandom().randrange(1, 1_000_000))
    log_dir = config.log_dir or ROOT / "var" / "chaos" / datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(config, log_dir, out)
    try:
        return run.execute()
    finally:
        run.cleanup()


def _breakdown(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def format_report(report: ChaosReport) -> str:
    c = report.config
    injected = report.injected()
    # Faults not injected (nothing to kill) and what happened by itself (a node's exit).
    others = Counter(
        f"{f.kind}: {f.target} {f.detail.split(';')[0]}".replace(": - ", ": ")
        for f in report.faults
        if not f.injected
    )
    rows = [
        ("submitted", report.submitted, f"{c.mails} at {c.rate:g}/s, seed {c.seed}"),
        ("accepted (202)", report.accepted, f"{report.client_retries} 503/connection retries"),
        ("not accepted", sum(report.not_accepted.values()), _breakdown(report.not_accepted)),
        ("delivered", report.delivered, "distinct accepted task ids at the sink"),
        ("failed with reason", report.failed_count, _breakdown(report.failed)),
        ("lost", len(report.lost), _breakdown(report.lost_by_status)),
        (
            "duplicated",
            len(report.duplicated),
            f"{report.extra_copies} extra copies; {len(report.in_the_window())} with the "
            f"first copy within {WINDOW:g}s of a SIGKILL of a node",
        ),
        ("unexpected mails", len(report.unexpected), "Message-IDs of no accepted task"),
    ]
    lines = ["", "Chaos soak", "-" * 72]
    lines += [f"  {name:<20}{value:>7}   {note}" for name, value, note in rows]
    lines.append("-" * 72)
    lines.append(f"  faults injected     {_breakdown(dict(injected)) or 'none'}")
    for what, times in others.items():
        lines.append(f"  not injected/other  {what} (x{times})")
    lines.append(f"  final statuses      {_breakdown(report.statuses)}")
    if report.delivered_not_success:
        lines.append(f"  delivered, yet      {_breakdown(report.delivered_not_success)}")
    for kind, message in report.failed_samples.items():
        lines.append(f"  e.g. {kind}: {message[:100]}")
    lines.append(
        f"  settled             {'yes' if report.settled else 'NO (deadline)'} in "
        f"{report.settle_seconds:.1f}s; whole run {report.elapsed:.1f}s"
    )
    lines.append(f"  logs                {report.log_dir}")
    verdict = "PASS" if report.ok else "FAIL"
    lines.append(
        f"  {verdict}: {len(report.lost)} lost, {len(report.duplicated)} duplicated, "
        f"{len(report.unexplained_duplicates)} of them outside the window a SIGKILL between "
        "the mail's data and the ledger's write leaves (bar: 0 lost, 0 outside)"
    )
    return "\n".join(lines)


def explain(report: ChaosReport, per_task: int = 12, tasks: int = 5) -> str:
    """The log lines that mention a few lost and duplicated tasks."""
    logs = sorted(report.log_dir.glob("*.log"))
    picked = [(f"lost {t}", t) for t in report.lost[:tasks]]
    picked += [
        (
            f"duplicated {mid}, copies at {report.duplicate_arrivals.get(mid)} s into the load",
            mid.strip("<>").rpartition("@")[0],
        )
        for mid in list(report.duplicated)[:tasks]
    ]
    out: list[str] = []
    for what, task_id in picked:
        out.append(f"\n{what}:")
        found = 0
        for log in logs:
            for line in log.read_text(errors="replace").splitlines():
                if task_id in line and found < per_task:
                    out.append(f"  {log.stem}: {line[:300]}")
                    found += 1
        if not found:
            out.append("  (no log line mentions it)")
    return "\n".join(out)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.chaos", description=__doc__)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=40.0, help="submissions per second")
    parser.add_argument("--seed", type=int, default=None, help="the fault schedule's seed")
    parser.add_argument("--nodes", type=int, default=3, help="worker nodes")
    parser.add_argument("--kill-every", type=float, default=2.5, help="seconds between SIGKILLs")
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    config = ChaosConfig(
        mails=args.mails,
        rate=args.rate,
        seed=args.seed,
        nodes=args.nodes,
        kill_every=args.kill_every,
        settle_timeout=args.settle_timeout,
        log_dir=args.log_dir,
    )
    try:
        report = run_chaos(config, out=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("chaos: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(format_report(report))
    if report.lost or report.duplicated:
        print(explain(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
