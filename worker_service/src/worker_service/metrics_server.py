"""Serve the merged worker metrics from the main process, and count task outcomes."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task
from celery.signals import (
    task_failure,
    task_retry,
    task_success,
    worker_init,
    worker_process_shutdown,
)
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from worker_service.celery_app import settings
from worker_service.metrics import TASKS

log = logging.getLogger(__name__)


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    if not settings.worker_metrics_port:
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    addr, port = str(settings.worker_metrics_addr), settings.worker_metrics_port
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        log.error("metrics cannot listen on %s port %d (%s); metrics are off", addr, port, exc)


@worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


@task_success.connect
def _succeeded(sender: Task, **_: Any) -> None:
    TASKS.labels(sender.name, "succeeded").inc()


@task_failure.connect
def _failed(sender: Task, **_: Any) -> None:
    TASKS.labels(sender.name, "failed").inc()


@task_retry.connect
def _retried(sender: Task, **_: Any) -> None:
    TASKS.labels(sender.name, "retried").inc()
