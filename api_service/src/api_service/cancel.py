"""Cancel a task that has not started: one script on its record decides.

The record (shared_schemas.records) is where the worker begins each attempt, in one
script that refuses to begin once the record says cancelled (worker_service.
task_records). So the cancel is one script on the same key: it succeeds only while no
attempt runs and the task has not finished, and marks the record; whichever of the two
scripts runs first wins, and a mail whose message a worker already fetched is still
never sent (docs/design.md, "Scheduling and cancel").

A scheduled task's entry is then taken out of the due-time index (in the broker's
database, which may be another Redis). That step only saves work: an entry promoted
meanwhile reaches a worker that refuses to begin it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from celery.backends.base import KeyValueStoreBackend
from redis.exceptions import RedisError

from shared_schemas import records
from shared_schemas.schedule import DUE_KEY, DUE_MESSAGES_KEY
from shared_schemas.stored_content import content_key

log = logging.getLogger(__name__)

# Why a cancelled task ended (its status's error message).
REASON = "cancelled by its sender (DELETE /tasks/{task_id}) before it was sent"

_META_PREFIX = KeyValueStoreBackend.task_keyprefix

# KEYS: the record, Celery's meta, the lease. ARGV: the caller. Reply: {0} no such task
# of this caller; {1, 1 if it was scheduled} cancelled; {2} an attempt is running (its
# record says so, or its lease is held); {3, state} finished already.
_CANCEL = f"""
if redis.call('HGET', KEYS[1], '{records.OWNER}') ~= ARGV[1] then
  return {{0}}
end
if redis.call('HEXISTS', KEYS[1], '{records.CANCELLED}') == 1 then
  return {{3, 'REVOKED'}}
end
local raw = redis.call('GET', KEYS[2])
if raw then
  local ok, meta = pcall(cjson.decode, raw)
  local state = ok and type(meta) == 'table' and meta['status']
  if state == 'SUCCESS' or state == 'FAILURE' or state == 'REVOKED' then
    return {{3, state}}
  end
end
if redis.call('HGET', KEYS[1], '{records.ATTEMPT}') == '{records.RUNNING}'
    or redis.call('EXISTS', KEYS[3]) == 1 then
  return {{2}}
end
local scheduled = redis.call('HEXISTS', KEYS[1], '{records.SCHEDULED}')
redis.call('HSET', KEYS[1], '{records.CANCELLED}', ARGV[2], '{records.CANCELLED_AT}', ARGV[3])
redis.call('HDEL', KEYS[1], '{records.SCHEDULED}')
return {{1, scheduled}}
"""


@dataclass(frozen=True)
class Cancelled:
    """The task will never be sent."""


@dataclass(frozen=True)
class Unknown:
    """No task with this id was submitted by this caller."""


@dataclass(frozen=True)
class TooLate:
    """An attempt is running (``finished`` None), or the task ended in ``finished``."""

    finished: str | None


class Canceller:
    def __init__(self, results: aioredis.Redis, broker: aioredis.Redis) -> None:
        self._results = results
        self._broker = broker
        self._cancel = results.register_script(_CANCEL)

    async def cancel(self, task_id: str, owner: str) -> Cancelled | Unknown | TooLate:
        """Cancel ``task_id`` for ``owner`` if it has not started. Redis errors of the
        decisive step propagate: then it may or may not have been cancelled."""
        keys = [records.record_key(task_id), f"{_META_PREFIX}{task_id}"]
        keys.append(records.lease_key(task_id))
        args = [owner, REASON.format(task_id=task_id), datetime.now(UTC).isoformat()]
        reply = await self._cancel(keys=keys, args=args)
        code = int(reply[0])
        if code == 0:
            return Unknown()
        if code == 2:
            return TooLate(None)
        if code == 3:
            state = reply[1]
            return TooLate(state.decode() if isinstance(state, bytes) else str(state))
        if int(reply[1]):
            await self._unschedule(task_id)
        await self._drop_content(task_id)
        return Cancelled()

    async def _drop_content(self, task_id: str) -> None:
        """The mail's stored attachments: no attempt will read them now."""
        try:
            await self._results.delete(content_key(task_id))
        except (RedisError, OSError):
            # They expire with the record; the worker also drops them when it refuses it.
            log.warning("could not delete the attachments of %s", task_id, exc_info=True)

    async def _unschedule(self, task_id: str) -> None:
        try:
            async with self._broker.pipeline(transaction=True) as pipe:
                pipe.zrem(DUE_KEY, task_id)
                pipe.hdel(DUE_MESSAGES_KEY, task_id)
                await pipe.execute()
        except (RedisError, OSError):
            # Cancelled all the same: when promoted, the worker refuses to begin it.
            log.warning("could not take %s out of the due-time index", task_id, exc_info=True)
