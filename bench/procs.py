"""Child processes for the benchmark, and the CPU time they use (from /proc)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

import httpx
import redis

from devtools.procs import BIN, free_port, wait_for
from devtools.procs import Proc as BaseProc
from devtools.redis_binary import find_redis_server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (all its threads); with ``children``, also the CPU of
    its children that have exited and been waited for (cutime + cstime)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime ...
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def session_cpu_seconds(leader: int) -> float:
    """CPU time of every live process in ``leader``'s session (a celery node and its
    pool children), plus children of the leader that have already exited."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[3]) != leader:
            continue
        total += cpu_seconds(int(entry.name), children=int(entry.name) == leader)
    return total


def _kib_field(path: str, field: bytes) -> int:
    """A ``Name:  <n> kB`` line of a /proc file, in bytes; 0 if the process is gone or
    a zombie (no such line)."""
    try:
        with open(path, "rb") as lines:
            for line in lines:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def sessions_memory(leaders: Collection[int]) -> tuple[int, int, int]:
    """The memory of every live process in the sessions of ``leaders`` (celery nodes and
    their pool children): VmRSS summed, PSS summed, and how many processes. Pages a pool
    child shares with its parent after fork count once per process in the RSS sum, an
    upper bound of what the node holds; PSS splits each shared page between the
    processes that map it, so its sum is what they hold."""
    rss = proportional = processes = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[3]) not in leaders:
            continue
        rss += _kib_field(f"/proc/{entry.name}/status", b"VmRSS:")
        proportional += _kib_field(f"/proc/{entry.name}/smaps_rollup", b"Pss:")
        processes += 1
    return rss, proportional, processes


class PeakMemory:
    """The largest ``sessions_memory`` of some processes while the block runs, sampled
    every ``interval`` seconds in a thread (one /proc scan a sample)."""

    def __init__(self, procs: Iterable[BaseProc], interval: float = 0.1) -> None:
        self._leaders = frozenset(proc.pid for proc in procs)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self.rss_bytes = 0  # the largest RSS sum sampled
        self.pss_bytes = 0  # the largest PSS sum sampled
        self.processes = 0  # the most processes seen in those sessions at once

    def sample(self) -> None:
        rss, pss, processes = sessions_memory(self._leaders)
        self.rss_bytes = max(self.rss_bytes, rss)
        self.pss_bytes = max(self.pss_bytes, pss)
        self.processes = max(self.processes, processes)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()


class Proc(BaseProc):
    """A child process in its own session, whose CPU time can be read."""

    def cpu(self) -> float:
        """CPU seconds of the process and everything in its session."""
        return session_cpu_seconds(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        super().stop(sig, timeout)


def start_redis(log_dir: Path) -> tuple[Proc, int]:
    port = free_port()
    data = log_dir / "redis-data"
    data.mkdir(exist_ok=True)
    # As deployed (compose): append-only persistence, fsync every second.
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    args += ["--save", "", "--appendonly", "yes", "--maxmemory-policy", "noeviction"]
    proc = Proc("redis", [find_redis_server(), *args], {}, log_dir)
    client = redis.Redis(port=port, socket_timeout=5)

    def pings() -> bool:
        if not proc.alive():
            raise RuntimeError(f"redis-server exited:\n{proc.log()}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(pings, timeout=20, what="redis-server to answer PING")
    except BaseException:
        proc.stop()
        raise
    finally:
        client.close()
    return proc, port


def start_uvicorn(name: str, app: str, env: Mapping[str, str], log_dir: Path) -> tuple[Proc, str]:
    """``uvicorn <app> --host 127.0.0.1 --port <free>``: the project's own command line
    (Dockerfile and compose), on loopback; every app of the benchmark runs under it."""
    port = free_port()
    cmd = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(name, cmd, env, log_dir)
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.log()}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=60, what=f"{name} to answer /healthz", interval=0.1)
    except BaseException:
        proc.stop()
        raise
    return proc, base_url


def start_workers(
    app: str,
    names: Iterable[str],
    concurrency: int | None,
    env: Mapping[str, str],
    log_dir: Path,
    extra_env: Callable[[str], Mapping[str, str]] | None = None,
) -> list[Proc]:
    """Celery nodes (``celery -A <app> worker``, the project's command line), started
    side by side; returns once every one has logged that it is ready.

    ``concurrency=None`` is the shipped default: ``celery -A <app> worker`` with no
    --concurrency, no --pool and nothing else the bench adds for its other drains (no
    --without-mingle/--without-gossip), only --hostname and --loglevel to tell the
    nodes' logs apart."""
    procs = []
    for name in names:
        cmd = [str(BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO"]
        cmd += ["--hostname", f"{name}@%h"]
        if concurrency is not None:
            cmd += ["--concurrency", str(concurrency)]
            # Start-up only: no mingle (a 1 s exchange with other nodes at start), no
            # gossip.
            cmd += ["--without-mingle", "--without-gossip"]
        node_env = {**env, **(extra_env(name) if extra_env else {})}
        procs.append(Proc(name, cmd, node_env, log_dir))

    def ready() -> bool:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"worker {proc.name} exited:\n{proc.log()}")
        return all(" ready." in proc.log() for proc in procs)

    try:
        wait_for(ready, timeout=90, what="workers to be ready", interval=0.05)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs
