"""Keep the per-task record (shared_schemas.records) current from the worker side, and
let one attempt of a task run at a time.

The API writes submitted_at; the worker marks each attempt running or waiting for its
retry, counts retries, and keeps the record alive as long as the result. The API reports
STARTED from the record, so Celery's own STARTED state is not stored.

Each attempt holds the task's *lease* (a key with a random token and a TTL of the time
limit) from its start to its end. A second copy of the same task's message (restored
while the first still ran, after a broker connection was lost) finds the lease taken
and waits its turn instead of sending beside it (docs/design.md, "One attempt at a
time"). The record also counts attempts begun and not yet ended: an attempt whose
worker died never ends, so the next one knows how many were lost.

An attempt never begins once the record says the task was cancelled: the API's cancel
is one script on the same record (api_service.cancel), so of a cancel and an attempt's
start, whichever runs first wins (docs/design.md, "Scheduling and cancel").
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task
from celery.signals import task_retry
from redis.exceptions import RedisError

from shared_schemas import records
from worker_service.lua import run_script

log = logging.getLogger(__name__)

# A record field: attempts begun and not ended.
UNFINISHED = "unfinished"

# KEYS: the record, the key to read, the lease. ARGV: the record's field names for the
# start time, the retries, the attempt and the unfinished count, then the start time,
# the retries, the attempt's state, the record's TTL, the lease's token and its TTL (ms),
# then the field names for the cancel's reason and for "scheduled".
# Reply: {2, the reason} when the task was cancelled; {0, the lease's ms left} when
# another attempt holds it, else {1, the number of unfinished attempts counting this
# one, the value read}.
_BEGIN_ATTEMPT = """
local cancelled = redis.call('HGET', KEYS[1], ARGV[11])
if cancelled then
  return {2, cancelled}
end
if not redis.call('SET', KEYS[3], ARGV[9], 'NX', 'PX', ARGV[10]) then
  return {0, redis.call('PTTL', KEYS[3])}
end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[6], ARGV[3], ARGV[7])
redis.call('HDEL', KEYS[1], ARGV[12])
local unfinished = redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
redis.call('EXPIRE', KEYS[1], ARGV[8])
return {1, unfinished, redis.call('GET', KEYS[2])}
"""

# KEYS: the record, the lease. ARGV: the unfinished field, the lease's token.
# Shared with the delivery ledger's script, which ends a delivered attempt.
END_ATTEMPT_LUA = """
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
end
"""
_END_ATTEMPT = END_ATTEMPT_LUA + "return 1\n"


lease_key = records.lease_key


@dataclass(frozen=True)
class Begun:
    """An attempt that holds the lease: ``token`` ends it, ``lost`` earlier attempts
    began and never ended, ``value`` is what was read."""

    token: str
    lost: int
    value: bytes | None


@dataclass(frozen=True)
class Busy:
    """Another attempt holds the lease for ``seconds_left`` more."""

    seconds_left: float


@dataclass(frozen=True)
class Cancelled:
    """The task was cancelled (``reason``): no attempt may begin."""

    reason: str


def begin_attempt(task: Task, read_key: str, lease_seconds: float) -> Begun | Busy | Cancelled:
    """Take the task's lease, mark the running attempt in its record and read
    ``read_key``, in one round trip (atomic, as a Lua script), unless the task was
    cancelled. Redis errors propagate."""
    request = task.request
    conf = task.app.conf
    client: redis.Redis = task.backend.client
    # The result is stored at the latest when the attempt ends and then lives
    # result_expires; the record outlives it, so no second write is needed.
    ttl = conf.result_expires + int(lease_seconds) + 1
    token = uuid.uuid4().hex
    reply: list[Any] = run_script(
        client,
        _BEGIN_ATTEMPT,
        [records.record_key(request.id), read_key, lease_key(request.id)],
        [
            records.STARTED_AT,
            records.RETRIES,
            records.ATTEMPT,
            UNFINISHED,
            datetime.now(UTC).isoformat(),
            request.retries or 0,
            records.RUNNING,
            ttl,
            token,
            int(lease_seconds * 1000),
            records.CANCELLED,
            records.SCHEDULED,
        ],
    )
    if reply[0] == 2:
        reason = reply[1]
        return Cancelled(reason.decode() if isinstance(reason, bytes) else str(reason))
    if not reply[0]:
        return Busy(max(int(reply[1]), 0) / 1000)
    value: bytes | None = reply[2] if len(reply) > 2 else None
    return Begun(token=token, lost=int(reply[1]) - 1, value=value)


def end_attempt(task: Task, token: str) -> None:
    """Release the lease and count the attempt as ended. Best effort: a lease left
    behind lapses by itself, and only delays the task's next attempt."""
    try:
        run_script(
            task.backend.client,
            _END_ATTEMPT,
            [records.record_key(task.request.id), lease_key(task.request.id)],
            [UNFINISHED, token],
        )
    except (RedisError, OSError):
        log.warning("could not end the attempt of %s", task.request.id, exc_info=True)


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
