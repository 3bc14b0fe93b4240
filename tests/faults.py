"""Helpers for fault tests: find and kill the pool child running a task."""

from __future__ import annotations

import os
import signal
from typing import Any

from celery import Celery

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


def kill_child_running(control: Celery, task_id: str) -> int:
    pid = child_running(control, task_id)
    os.kill(pid, signal.SIGKILL)
    return pid
