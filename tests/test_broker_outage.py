"""Redis down: the API answers 503 quickly and stays alive; when Redis is back, the same
API and worker processes carry on."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, service_env
from tests.procs import Proc, RedisServer, start_api, start_worker
from tests.smtp_sink import SmtpSink
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration


@dataclass
class OutageStack:
    redis: RedisServer
    api: Proc
    worker: Proc
    base_url: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )


@pytest.fixture(scope="module")
def outage(smtp: SmtpSink, log_dir: Path) -> Iterator[OutageStack]:
    """A Redis of its own, so stopping it leaves the other tests alone."""
    server = RedisServer(log_dir)
    env = service_env(server, smtp)
    worker = start_worker("outage-worker", env, log_dir)
    api, base_url = start_api(env, log_dir, name="outage-api")
    yield OutageStack(server, api, worker, base_url)
    api.stop()
    worker.stop()
    server.stop()


def _send(client: httpx.Client, label: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(
        "/send-email",
        json={"to": "outage@example.com", "subject": f"{label} {uuid.uuid4().hex}", "body": "x"},
    )
    return response, time.monotonic() - started


def _delivers(stack: OutageStack, label: str) -> None:
    with stack.client() as client:
        response, _ = _send(client, label)
        assert response.status_code == 202, response.text
        status = wait_until_finished(client, response.json()["task_id"], timeout=60)
    assert status["status"] == "SUCCESS", status


def test_redis_stopped_gives_503_fast_and_recovery_needs_no_restart(
    outage: OutageStack,
) -> None:
    _delivers(outage, "before")
    outage.redis.proc.stop()
    try:
        with outage.client() as client:
            for _ in range(3):
                response, took = _send(client, "during")
                assert response.status_code == 503, response.text
                assert took < 5, f"503 took {took:.1f}s"
                assert "nothing was queued" in response.json()["detail"]
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
    finally:
        outage.redis.start()
    assert outage.api.alive()
    assert outage.worker.alive()
    _delivers(outage, "after")


def test_redis_frozen_gives_503_within_5_seconds(outage: OutageStack) -> None:
    """A Redis that accepts connections but never answers: every wait must be bounded,
    also for callers queued behind others (more of them than publish slots)."""
    _delivers(outage, "before freeze")
    os.kill(outage.redis.proc.popen.pid, signal.SIGSTOP)
    try:
        with outage.client() as client:
            response, took = _send(client, "frozen")
            assert response.status_code == 503, response.text
            assert took < 5, f"503 took {took:.1f}s"

            def send_one(n: int) -> tuple[int, float]:
                with outage.client() as own:
                    answer, seconds = _send(own, f"frozen {n}")
                return answer.status_code, seconds

            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(send_one, range(8)))
            assert [code for code, _ in answers] == [503] * 8, answers
            assert max(seconds for _, seconds in answers) < 5, answers
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            assert time.monotonic() - started < 1
    finally:
        os.kill(outage.redis.proc.popen.pid, signal.SIGCONT)
    _delivers(outage, "after thaw")
