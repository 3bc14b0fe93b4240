"""Start and stop the real processes the integration tests run against."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

import redis

from devtools.procs import BIN, Proc, free_port, wait_for
from devtools.redis_binary import find_redis_server

__all__ = ["BIN", "Proc", "RedisServer", "free_port", "start_api", "start_worker", "wait_for"]


class RedisServer:
    def __init__(self, log_dir: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.log_dir = log_dir
        self.data = log_dir / f"redis-{self.port}"
        self.data.mkdir()
        self.client = redis.Redis(port=self.port, password=password, socket_timeout=5)
        self.starts = 0
        self.start()

    def start(self) -> None:
        """Start (or start again) on the same port, with the data it had written."""
        self.starts += 1
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data)]
        args += ["--save", "", "--appendonly", "yes"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = Proc(
            f"redis-{self.port}-{self.starts}", [find_redis_server(), *args], {}, self.log_dir
        )
        wait_for(self._pings, what="redis-server to answer PING")

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            assert self.proc.alive(), self.proc.log()
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


def start_worker(
    name: str,
    env: Mapping[str, str],
    log_dir: Path,
    concurrency: int = 2,
    command: list[str] | None = None,
) -> Proc:
    """A celery worker; ``command`` replaces the default command line (from .venv/bin)."""
    if command is not None:
        command = [str(BIN / command[0]), *command[1:]]
    proc = Proc(
        name,
        command
        or [
            str(BIN / "celery"),
            "-A",
            "worker_service",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
        log_dir,
    )

    def ready() -> bool:
        assert proc.alive(), f"worker {name} exited:\n{proc.log()}"
        return " ready." in proc.log()

    wait_for(ready, timeout=60, what=f"worker {name} to be ready")
    return proc


def start_api(env: Mapping[str, str], log_dir: Path, name: str = "api") -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        name,
        [str(BIN / "uvicorn"), "api_service.main:app", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log_dir,
    )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.alive(), f"API exited:\n{proc.log()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(healthy, timeout=30, what="the API to listen")
    return proc, base_url
