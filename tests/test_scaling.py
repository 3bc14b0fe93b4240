"""Two worker nodes on one queue share the work."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import API_KEY, service_env
from tests.procs import Proc, RedisServer, start_api, start_worker, wait_for
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

SCALE_DB = 4
MAILS = 40


@pytest.fixture
def two_nodes(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> Iterator[tuple[str, list[Proc]]]:
    env = service_env(redis_server, smtp, db=SCALE_DB)
    nodes = [start_worker(f"node{i}-{uuid.uuid4().hex[:4]}", env, log_dir, 1) for i in (1, 2)]
    api, base_url = start_api(env, log_dir, name="scale-api")
    yield base_url, nodes
    api.stop()
    for node in nodes:
        node.stop()


def test_two_worker_nodes_on_one_queue_both_deliver(
    two_nodes: tuple[str, list[Proc]], smtp: SmtpSink
) -> None:
    import httpx

    base_url, nodes = two_nodes
    run = uuid.uuid4().hex[:8]
    task_ids = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        for i in range(MAILS):
            response = c.post(
                "/send-email",
                json={"to": f"scale{i}@example.com", "subject": f"scale {run} {i}", "body": "x"},
            )
            assert response.status_code == 202
            task_ids.append(response.json()["task_id"])

    def delivered() -> int:
        return sum(
            1 for m in smtp.messages() if str(m.message["Subject"]).startswith(f"scale {run}")
        )

    wait_for(lambda: delivered() == MAILS, timeout=60, what=f"{MAILS} mails")
    succeeded = [
        set(re.findall(r"Task email\.send\[([0-9a-f-]+)\] succeeded", node.log())) for node in nodes
    ]
    assert all(done for done in succeeded), [len(done) for done in succeeded]
    assert succeeded[0].isdisjoint(succeeded[1])
    assert succeeded[0] | succeeded[1] == set(task_ids)
