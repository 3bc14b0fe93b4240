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

import redis
from celery import Task
from celery.signals import task_retry
from redis.exceptions import RedisError

from shared_schemas import records
from worker_service.lua import run_script

log = logging.getLogger(__name__)


# KEYS: the task's record, the key to read. ARGV: the record's field names for the
# start time, the retries and the attempt, then their values, then the record's TTL.
# One command where MULTI/HSETNX/HSET/EXPIRE/GET/EXEC was six: each costs the pool
# process a command to pack and a reply to parse (docs/performance.md).
_BEGIN_ATTEMPT = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[5], ARGV[3], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return redis.call('GET', KEYS[2])
"""


def begin_attempt(task: Task, read_key: str) -> bytes | None:
    """Mark the running attempt in the task's record and read ``read_key``, in one
    round trip (atomic, as a Lua script). Redis errors propagate: the caller needs
    the value it asked for."""
    request = task.request
    conf = task.app.conf
    client: redis.Redis = task.backend.client
    # The result is stored at the latest task_time_limit from now (the hard limit ends
    # the attempt) and then lives result_expires; the record outlives it, so no second
    # write is needed when the task finishes.
    ttl = conf.result_expires + (conf.task_time_limit or 0)
    value: bytes | None = run_script(
        client,
        _BEGIN_ATTEMPT,
        [records.record_key(request.id), read_key],
        [
            records.STARTED_AT,
            records.RETRIES,
            records.ATTEMPT,
            datetime.now(UTC).isoformat(),
            request.retries or 0,
            records.RUNNING,
            ttl,
        ],
    )
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
