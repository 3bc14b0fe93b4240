"""Session-wide real processes: redis-server, an SMTP server, celery workers, uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.procs import Proc, RedisServer, free_port, start_api, start_worker
from tests.smtp_sink import SmtpSink

API_KEY = "test-key-alpha"
OTHER_API_KEY = "test-key-bravo"
MAIL_FROM = "Test Sender <sender@example.org>"
QUIET_DB = 5  # a Redis database no worker consumes
SMTP_TIMEOUT = 5
MAX_RETRIES = 3
VISIBILITY_TIMEOUT = 12
TASK_TIME_LIMIT = 8


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    redis: RedisServer
    smtp: SmtpSink
    api: Proc
    worker: Proc
    log_dir: Path
    worker_metrics_port: int

    def client(self, key: str = API_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.stop()


def service_env(redis_server: RedisServer, smtp: SmtpSink, db: int = 0) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": redis_server.url(db),
        "CELERY_RESULT_BACKEND": redis_server.url(db),
        "API_KEYS": f"{API_KEY}, {OTHER_API_KEY}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "SMTP_TIMEOUT": str(SMTP_TIMEOUT),
        "MAIL_FROM": MAIL_FROM,
        # Short delays and limits so fault tests finish in seconds. The visibility
        # timeout still exceeds EMAIL_RETRY_MAX_DELAY + TASK_TIME_LIMIT, as the worker
        # insists.
        "EMAIL_MAX_RETRIES": str(MAX_RETRIES),
        "EMAIL_RETRY_BASE_DELAY": "0.5",
        "EMAIL_RETRY_MAX_DELAY": "2",
        "TASK_TIME_LIMIT": str(TASK_TIME_LIMIT),
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        # Many workers run side by side here; the metrics test gives its own a port.
        "WORKER_METRICS_PORT": "0",
    }


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, smtp: SmtpSink, log_dir: Path) -> Iterator[Stack]:
    env = service_env(redis_server, smtp)
    metrics_port = free_port()
    worker = start_worker(
        "worker1", {**env, "WORKER_METRICS_PORT": str(metrics_port)}, log_dir, concurrency=2
    )
    api, base_url = start_api(env, log_dir)
    yield Stack(base_url, env, redis_server, smtp, api, worker, log_dir, metrics_port)
    api.stop()
    worker.stop()


@dataclass
class QuietApi:
    """An API whose queue no worker reads: whatever it enqueues stays visible."""

    base_url: str
    redis: redis.Redis

    def client(self, key: str = API_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )


@pytest.fixture(scope="session")
def quiet_api(redis_server: RedisServer, smtp: SmtpSink, log_dir: Path) -> Iterator[QuietApi]:
    env = service_env(redis_server, smtp, db=QUIET_DB)
    api, base_url = start_api(env, log_dir, name="quiet-api")
    client = redis.Redis(port=redis_server.port, db=QUIET_DB)
    yield QuietApi(base_url, client)
    client.close()
    api.stop()
