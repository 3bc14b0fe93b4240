"""A submission, and the API's record of it, written a batch at a time.

The dispatcher (api_service.dispatch) records every submission of a batch in one round
trip, before it queues their messages.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from shared_schemas import records


@dataclass(frozen=True, slots=True)
class Submission:
    """One accepted task: its name, JSON-ready keyword arguments, id and owner; when it
    was asked to go out, whether it waits in the due-time index until then, and the
    template it was rendered from as JSON ("" when none)."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str
    owner: str
    send_at: datetime | None = None
    scheduled: bool = False
    template: str = ""

    def optional_fields(self) -> list[tuple[str, str]]:
        """The record's fields that only some submissions have."""
        fields: list[tuple[str, str]] = []
        if self.send_at is not None:
            fields.append((records.SEND_AT, self.send_at.isoformat()))
        if self.scheduled:
            fields.append((records.SCHEDULED, "1"))
        if self.template:
            fields.append((records.TEMPLATE, self.template))
        return fields


# Every record of a batch in one command, atomically: a MULTI/EXEC of an HSET and an
# EXPIRE per submission cost ~2.5 times as much client CPU per record
# (packing and parsing 2n + 2 commands and replies). ARGV: the submission time, then
# for each key in turn the task name, owner, TTL, and the number of optional fields
# followed by their names and values.
_RECORD_BATCH = f"""
local at = 2
for _, key in ipairs(KEYS) do
  redis.call('HSET', key, '{records.TASK}', ARGV[at], '{records.OWNER}', ARGV[at + 1],
             '{records.SUBMITTED_AT}', ARGV[1])
  local ttl = ARGV[at + 2]
  local optional = tonumber(ARGV[at + 3])
  at = at + 4
  for _ = 1, optional do
    redis.call('HSET', key, ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  redis.call('EXPIRE', key, ttl)
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
        now = datetime.now(UTC)
        args: list[str | int] = [now.isoformat()]
        for submission in batch:
            send_at = submission.send_at
            # A scheduled task's record must outlive its wait, then its result.
            wait = 0
            if send_at is not None and submission.scheduled:
                wait = math.ceil((send_at - now).total_seconds())
            args += (submission.task_name, submission.owner, self._result_ttl + max(wait, 0))
            optional = submission.optional_fields()
            args.append(len(optional))
            for name, value in optional:
                args += (name, value)
        try:
            await self._record_batch(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not record the submissions: {exc!r}") from exc

    async def forget(self, task_ids: Sequence[str]) -> None:
        """Undo records whose publish failed, so the ids are not reported as PENDING."""
        if not task_ids:
            return
        # The callers are already answering 503; if this fails too, the records
        # expire on their own. Bounded by the client's socket timeout.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(*(records.record_key(task_id) for task_id in task_ids))
