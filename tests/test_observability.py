"""Operators see everything else: readiness, metrics that move with work, JSON logs
that name the task."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from tests.conftest import API_KEY, Stack
from tests.procs import wait_for
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 if absent."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(4))
    return 0.0


def test_readyz_reports_its_checks_and_the_workers_seen(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url) as client:
        wait_for(
            lambda: (client.get("/readyz").json()["workers_seen"] or 0) >= 1,
            what="the worker to report in",
        )
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": True, "result_store": True}


def test_api_metrics_move_with_submissions(stack: Stack) -> None:
    with stack.client() as client:
        before = client.get("/metrics").text
        response = client.post(
            "/send-email", json={"to": "m@example.com", "subject": "metrics", "body": "x"}
        )
        client.post("/send-email", json={"to": "nope"})
        wait_until_finished(client, response.json()["task_id"])
        after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    name = "email_dispatch_submissions_total"
    for outcome in ("accepted", "invalid"):
        grew = _sample(text, name, task="email.send", outcome=outcome) - _sample(
            before, name, task="email.send", outcome=outcome
        )
        assert grew == 1, outcome
    latency = "email_dispatch_http_request_duration_seconds_count"
    labels = {"method": "POST", "route": "/send-email", "status": "202"}
    assert _sample(text, latency, **labels) > _sample(before, latency, **labels)
    assert 'email_dispatch_queue_depth{queue="email"}' in text
    assert _sample(text, "email_dispatch_workers_seen") >= 1


def test_worker_metrics_count_tasks_across_pool_processes(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.worker_metrics_port}/metrics"
    before = httpx.get(url).text
    with stack.client() as client:
        ids = [
            client.post(
                "/send-email", json={"to": f"w{i}@example.com", "subject": "wm", "body": "x"}
            ).json()["task_id"]
            for i in range(6)
        ]
        for task_id in ids:
            wait_until_finished(client, task_id)

    def counted() -> bool:
        text = httpx.get(url).text
        name = "email_dispatch_worker_tasks_total"
        done = _sample(text, name, task="email.send", outcome="succeeded")
        return done - _sample(before, name, task="email.send", outcome="succeeded") >= 6

    wait_for(
        counted,
        timeout=30,
        what=f"the worker metrics to count 6 more successes; before:\n{before}\nnow:\n"
        + httpx.get(url).text,
    )
    text = httpx.get(url).text
    smtp = "email_dispatch_smtp_seconds_count"
    assert _sample(text, smtp) - _sample(before, smtp) >= 6


def test_logs_are_json_lines_that_carry_the_task_id(stack: Stack) -> None:
    subject = f"logged {uuid.uuid4().hex[:8]}"
    recipient = f"log-{uuid.uuid4().hex[:8]}@example.com"
    mail = {"to": recipient, "subject": subject, "body": "secret"}
    # Sent twice with one Idempotency-Key: the API logs the replay (INFO) with the id.
    idempotent = {"Idempotency-Key": f"log-{uuid.uuid4().hex}"}
    with stack.client() as client:
        response = client.post("/send-email", json=mail, headers=idempotent)
        task_id = response.json()["task_id"]
        replay = client.post("/send-email", json=mail, headers=idempotent)
        assert replay.json()["task_id"] == task_id
        wait_until_finished(client, task_id)

    def lines_about(log: str) -> list[dict[str, object]]:
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        return [r for r in records if task_id in json.dumps(r)]

    wait_for(lambda: len(lines_about(stack.worker.log())) >= 2, what="worker log lines")
    worker_lines = lines_about(stack.worker.log())
    assert {r.get("task_id") for r in worker_lines} == {task_id}, worker_lines
    assert all(r["level"] and r["time"] and r["message"] for r in worker_lines)
    api_lines = lines_about(stack.api.log())
    assert [r["message"] for r in api_lines] == ["replayed submission"], api_lines
    assert api_lines[0]["task_id"] == task_id
    # Neither the mail (its text, its recipients: Celery's success line would print the
    # result) nor the caller's key is logged.
    for log in (stack.worker.log(), stack.api.log()):
        assert subject not in log
        assert recipient not in log
        assert API_KEY not in log
