"""A submission, and the API's record of it, written a batch at a time.

The dispatcher (api_service.dispatch) records every submission of a batch in one round
trip, before it queues their messages. A batch with attachments stores their bytes
first, in one more round trip (shared_schemas.stored_content).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from shared_schemas import records
from shared_schemas.stored_content import content_key, field_names


@dataclass(frozen=True, slots=True)
class Submission:
    """One accepted task: its name, JSON-ready keyword arguments, id and owner, the
    template it was rendered from as JSON ("" when none), and the bytes its message
    refers to, stored under ``content_key(task_id)`` (its attachments, in order)."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str
    owner: str
    template: str = ""
    stored: Sequence[bytes] = ()


# Every record of a batch in one command, atomically: a MULTI/EXEC of an HSET and an
# EXPIRE per submission cost ~2.5 times as much client CPU per record
# (packing and parsing 2n + 2 commands and replies). ARGV: the TTL, the submission time,
# then the task name, owner and template ("" for none) of each key in turn.
_RECORD_BATCH = f"""
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, '{records.TASK}', ARGV[3 * i], '{records.OWNER}', ARGV[3 * i + 1],
             '{records.SUBMITTED_AT}', ARGV[2])
  if ARGV[3 * i + 2] ~= '' then
    redis.call('HSET', key, '{records.TEMPLATE}', ARGV[3 * i + 2])
  end
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""


class SubmissionRecorder:
    def __init__(self, client: aioredis.Redis, result_ttl: int) -> None:
        self._redis = client
        self._result_ttl = result_ttl
        self._record_batch = client.register_script(_RECORD_BATCH)

    async def record(self, batch: Sequence[Submission]) -> None:
        """Write every submission's record, all of them or none.

        The worker extends a record when its task starts, so that it outlives the
        result it describes.
        """
        keys = [records.record_key(submission.task_id) for submission in batch]
        args: list[str | int] = [self._result_ttl, datetime.now(UTC).isoformat()]
        for submission in batch:
            args += (submission.task_name, submission.owner, submission.template)
        try:
            if any(submission.stored for submission in batch):
                await self._store_content(batch)
            await self._record_batch(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not record the submissions: {exc!r}") from exc

    async def _store_content(self, batch: Sequence[Submission]) -> None:
        """Each submission's attachments, raw, under its content key, before its record
        and message exist. The key lives as long as the record (RESULT_TTL); the worker
        deletes it when the task ends (docs/design.md, "Attachments, inline images and
        headers"). A MULTI, so no key is ever left without its TTL."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for submission in batch:
                if not submission.stored:
                    continue
                key = content_key(submission.task_id)
                fields = field_names(len(submission.stored))
                pipe.hset(key, mapping=dict(zip(fields, submission.stored, strict=True)))
                pipe.expire(key, self._result_ttl)
            await pipe.execute()

    async def forget(self, task_ids: Sequence[str]) -> None:
        """Undo records whose publish failed, so the ids are not reported as PENDING."""
        if not task_ids:
            return
        # The callers are already answering 503; if this fails too, the records and
        # stored attachments expire on their own. Bounded by the client's socket timeout.
        keys = [records.record_key(task_id) for task_id in task_ids]
        keys += [content_key(task_id) for task_id in task_ids]
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(*keys)
