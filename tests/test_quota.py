"""SMTP_RATE_LIMIT is one quota for every worker node on the broker: three nodes with a
limit of 20 deliver 18-22 mails a second over a drain, never more than 30 in any one
second, and a mail waiting for its turn neither fails nor uses up a retry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, service_env
from tests.procs import Proc, RedisServer, free_port, start_api, start_worker, wait_for
from tests.smtp_sink import SmtpSink
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration

QUOTA_DB = 6
RATE = 20
MAILS = 160


@pytest.fixture
def limited_nodes(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> Iterator[tuple[str, list[Proc], int]]:
    env = {
        **service_env(redis_server, smtp, db=QUOTA_DB),
        "SMTP_RATE_LIMIT": str(RATE),
        # Above max(EMAIL_RETRY_MAX_DELAY, 5) + 10 + TASK_TIME_LIMIT, as the worker insists
        # when the quota is on.
        "CELERY_VISIBILITY_TIMEOUT": "30",
    }
    metrics_port = free_port()
    nodes = [
        start_worker(
            f"quota{i}-{uuid.uuid4().hex[:4]}",
            {**env, "WORKER_METRICS_PORT": str(metrics_port if i == 0 else 0)},
            log_dir,
            concurrency=16,
        )
        for i in range(3)
    ]
    api, base_url = start_api(env, log_dir, name="quota-api")
    yield base_url, nodes, metrics_port
    api.stop()
    for node in nodes:
        node.stop()


def test_three_nodes_share_one_rate_limit(
    limited_nodes: tuple[str, list[Proc], int], smtp: SmtpSink
) -> None:
    base_url, nodes, metrics_port = limited_nodes
    run = uuid.uuid4().hex[:8]
    task_ids = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        for i in range(MAILS):
            response = c.post(
                "/send-email",
                json={"to": f"quota{i}@example.com", "subject": f"quota {run} {i}", "body": "x"},
            )
            assert response.status_code == 202, response.text
            task_ids.append(response.json()["task_id"])

        def arrivals() -> list[float]:
            return sorted(
                m.at
                for m in smtp.messages()
                if str(m.message["Subject"]).startswith(f"quota {run}")
            )

        wait_for(lambda: len(arrivals()) == MAILS, timeout=60, what=f"{MAILS} mails")
        times = arrivals()
        statuses = [wait_until_finished(c, task_id) for task_id in task_ids[:: MAILS // 10]]

    rate = (len(times) - 1) / (times[-1] - times[0])
    busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert 18 <= rate <= 22, rate
    assert busiest <= 30, busiest
    # Waiting for a turn is not a failure and costs no retry.
    assert all(s["status"] == "SUCCESS" and s["retries"] == 0 for s in statuses), statuses
    # Every node sent its share.
    assert all("succeeded" in node.log() for node in nodes)
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    waited = [
        line
        for line in metrics.splitlines()
        if line.startswith("email_dispatch_quota_wait_seconds_count")
    ]
    assert waited, metrics
    assert float(waited[0].split()[-1]) > 0, waited
