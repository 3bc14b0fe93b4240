"""Helpers for fault tests: ask the workers which process runs a task."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery

from api_service.auth import fingerprint
from shared_schemas import records
from tests.procs import wait_for


def control_app(broker_url: str) -> Celery:
    app = Celery("test-control", broker=broker_url, set_as_current=False)
    app.conf.update(accept_content=["json"], task_serializer="json")
    return app


def child_running(control: Celery, task_id: str, timeout: float = 10) -> int:
    """The pid of the pool process that runs ``task_id`` (asks the workers)."""
    found: dict[str, Any] = {}

    def ask() -> bool:
        replies = control.control.inspect(timeout=0.5).active() or {}
        for tasks in replies.values():
            for task in tasks:
                if task["id"] == task_id and task.get("worker_pid"):
                    found["pid"] = task["worker_pid"]
                    return True
        return False

    wait_for(ask, timeout=timeout, interval=0.1, what=f"a worker to report {task_id} active")
    return int(found["pid"])


def forge_submission(result_store_url: str, task_name: str, owner_key: str) -> str:
    """Record a submission as the API would, for a message a test publishes itself."""
    task_id = str(uuid.uuid4())
    key = records.record_key(task_id)
    client = redis.Redis.from_url(result_store_url)
    client.hset(
        key,
        mapping={
            records.TASK: task_name,
            records.OWNER: fingerprint(owner_key),
            records.SUBMITTED_AT: datetime.now(UTC).isoformat(),
        },
    )
    client.expire(key, 600)
    client.close()
    return task_id
