"""Keep the per-task record (shared_schemas.records) current from the worker side.

The API writes submitted_at; the worker adds when the task first started and how
often it was retried, and keeps the record alive as long as the result.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.signals import task_postrun, task_prerun, task_retry
from redis.exceptions import RedisError

from shared_schemas import records

log = logging.getLogger(__name__)


@task_prerun.connect
def _record_start(task_id: str, task: Task, **_: Any) -> None:
    key = records.record_key(task_id)
    try:
        client = task.backend.client
        with client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, records.STARTED_AT, datetime.now(UTC).isoformat())
            pipe.hset(key, records.RETRIES, task.request.retries or 0)
            pipe.expire(key, task.app.conf.result_expires)
            pipe.execute()
    except (RedisError, OSError):
        # Bookkeeping only; the task itself must not fail for it.
        log.warning("could not record the start of %s", task_id, exc_info=True)


@task_postrun.connect
def _record_finish(task_id: str, task: Task, **_: Any) -> None:
    try:
        # The result lives result_expires from now; so does the record.
        task.backend.client.expire(records.record_key(task_id), task.app.conf.result_expires)
    except (RedisError, OSError):
        log.warning("could not extend the record of %s", task_id, exc_info=True)


@task_retry.connect
def _record_retry(sender: Task, request: Any, **_: Any) -> None:
    try:
        key = records.record_key(request.id)
        sender.backend.client.hset(key, records.RETRIES, (request.retries or 0) + 1)
    except (RedisError, OSError):
        log.warning("could not record a retry of %s", request.id, exc_info=True)
