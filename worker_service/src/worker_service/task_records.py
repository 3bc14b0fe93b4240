"""Keep the per-task record (shared_schemas.records) current from the worker side.

The API writes submitted_at; the worker marks each attempt running or waiting for its
retry, counts retries, and keeps the record alive as long as the result. The API reports
STARTED from the record, so Celery's own STARTED state (task_track_started: a GET, then
SETEX and PUBLISH in MULTI/EXEC, per task) is not stored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.signals import task_retry
from redis.exceptions import RedisError

from shared_schemas import records

log = logging.getLogger(__name__)


def begin_attempt(task: Task, read_key: str) -> bytes | None:
    """Mark the running attempt in the task's record and read ``read_key``, in one
    round trip. Redis errors propagate: the caller needs the value it asked for."""
    request = task.request
    key = records.record_key(request.id)
    conf = task.app.conf
    with task.backend.client.pipeline(transaction=True) as pipe:
        pipe.hsetnx(key, records.STARTED_AT, datetime.now(UTC).isoformat())
        pipe.hset(
            key, mapping={records.RETRIES: request.retries or 0, records.ATTEMPT: records.RUNNING}
        )
        # The result is stored at the latest task_time_limit from now (the hard limit
        # ends the attempt) and then lives result_expires; the record outlives it, so
        # no second write is needed when the task finishes.
        pipe.expire(key, conf.result_expires + (conf.task_time_limit or 0))
        pipe.get(read_key)
        value: bytes | None = pipe.execute()[-1]
    return value


@task_retry.connect
def _record_retry(sender: Task, request: Any, **_: Any) -> None:
    try:
        key = records.record_key(request.id)
        sender.backend.client.hset(
            key,
            mapping={records.RETRIES: (request.retries or 0) + 1, records.ATTEMPT: records.WAITING},
        )
    except (RedisError, OSError):
        log.warning("could not record a retry of %s", request.id, exc_info=True)
