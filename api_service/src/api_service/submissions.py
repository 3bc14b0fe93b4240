"""A submission, and the API's record of it, written a batch at a time.

The dispatcher (api_service.dispatch) records every submission of a batch in one round
trip, before it queues their messages. A batch with attachments stores their bytes
first, in one more round trip (shared_schemas.stored_content).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from shared_schemas import records
from shared_schemas.stored_content import content_key, field_names


@dataclass(frozen=True, slots=True)
class Submission:
    """One accepted task: its name, JSON-ready keyword arguments, id and owner; the
    caller's labels (shared_schemas.labels); when it was asked to go out and whether it
    waits in the due-time index until then; the template it was rendered from as JSON
    ("" when none); and the bytes its message refers to, stored under
    ``content_key(task_id)`` (its attachments, in order)."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str
    owner: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    send_at: datetime | None = None
    scheduled: bool = False
    template: str = ""
    stored: Sequence[bytes] = ()

    def fields(self, submitted_at: str) -> list[str]:
        """The record's fields and values, flat, as HSET takes them."""
        flat = [
            records.TASK,
            self.task_name,
            records.OWNER,
            self.owner,
            records.SUBMITTED_AT,
            submitted_at,
        ]
        if self.tags:
            flat += (records.TAGS, json.dumps(list(self.tags), separators=_COMPACT))
        if self.metadata:
            flat += (records.METADATA, json.dumps(dict(self.metadata), separators=_COMPACT))
        if self.send_at is not None:
            flat += (records.SEND_AT, self.send_at.isoformat())
        if self.scheduled:
            flat += (records.SCHEDULED, "1")
        if self.template:
            flat += (records.TEMPLATE, self.template)
        return flat

    def ttl(self, result_ttl: int, now: datetime) -> int:
        """A scheduled task's record must outlive its wait, then its result."""
        if self.send_at is None or not self.scheduled:
            return result_ttl
        return result_ttl + max(math.ceil((self.send_at - now).total_seconds()), 0)

    def index_keys(self) -> list[str]:
        """The listing indexes it is entered in: its owner's, then each tag's."""
        owner = self.owner
        return [
            records.owner_index_key(owner),
            *(records.tag_index_key(owner, t) for t in self.tags),
        ]


def labels_of(payload: BaseModel) -> tuple[list[str], dict[str, str]]:
    """The payload's ``tags`` and ``metadata`` fields, for a task whose payload has them."""
    return list(getattr(payload, "tags", ())), dict(getattr(payload, "metadata", {}))


_COMPACT = (",", ":")

# Every record of a batch in one command, atomically: a MULTI/EXEC of an HSET and an
# EXPIRE per submission cost ~2.5 times as much client CPU per record
# (packing and parsing 2n + 2 commands and replies). With each record, its entries in
# the listing indexes (docs/design.md, "Listing tasks"); entries older than the result
# TTL are pruned from each index written to, so an index never outgrows the records.
# KEYS: per submission its record, then its indexes (its owner's, then each tag's).
# ARGV: the result TTL, the oldest score kept, then per submission its score, its
# record's TTL, its number of indexes, its number of fields, then the fields and values.
_RECORD_BATCH = f"""
local result_ttl, oldest = ARGV[1], ARGV[2]
local indexes = {{}}
local k, a = 1, 3
while k <= #KEYS do
  local record, score, ttl = KEYS[k], ARGV[a], ARGV[a + 1]
  local n_indexes, n_fields = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  redis.call('HSET', record, unpack(ARGV, a + 4, a + 3 + n_fields))
  redis.call('EXPIRE', record, ttl)
  local id = string.sub(record, {len(records.KEY_PREFIX) + 1})
  for j = k + 1, k + n_indexes do
    redis.call('ZADD', KEYS[j], score, id)
    indexes[KEYS[j]] = true
  end
  k = k + 1 + n_indexes
  a = a + 4 + n_fields
end
for index in pairs(indexes) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. oldest)
  redis.call('EXPIRE', index, result_ttl)
end
return #KEYS
"""


# The same for a large group (a batch), every submission in one JSON argument, as
# api_service.publish_once sends a batch's messages (and why). ARGV: the result TTL, the
# oldest score kept, then per submission [its record, its indexes, its score, its
# record's TTL, its fields and values, its task id].
_RECORD_BATCH_JSON = """
local result_ttl, oldest = ARGV[1], ARGV[2]
local indexes = {}
for _, s in ipairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', s[1], unpack(s[5]))
  redis.call('EXPIRE', s[1], s[4])
  for _, index in ipairs(s[2]) do
    redis.call('ZADD', index, s[3], s[6])
    indexes[index] = true
  end
end
for index in pairs(indexes) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. oldest)
  redis.call('EXPIRE', index, result_ttl)
end
return 1
"""
JSON_FROM = 32  # submissions; the group commit's batches (16 at most) go as arguments


def score_now() -> int:
    """A listing index's score for now: microseconds since the epoch (exact in a double)."""
    return time.time_ns() // 1000


class SubmissionRecorder:
    def __init__(self, client: aioredis.Redis, result_ttl: int) -> None:
        self._redis = client
        self._result_ttl = result_ttl
        self._record_batch = client.register_script(_RECORD_BATCH)
        self._record_batch_json = client.register_script(_RECORD_BATCH_JSON)

    async def record(self, batch: Sequence[Submission]) -> None:
        """Write every submission's record and index entries, all of them or none.

        The worker extends a record when its task starts, so that it outlives the
        result it describes. Each submission's score is one microsecond after the one
        before it, so a batch lists in the order it was submitted.
        """
        if any(submission.stored for submission in batch):
            try:
                await self._store_content(batch)
            except (RedisError, OSError) as exc:
                raise BackendUnavailable(f"could not store the attachments: {exc!r}") from exc
        score = score_now()
        now = datetime.fromtimestamp(score / 1e6, UTC)
        submitted_at = now.isoformat()
        args: list[str | int] = [self._result_ttl, score - self._result_ttl * 1_000_000]
        if len(batch) >= JSON_FROM:
            group = [
                [
                    records.record_key(s.task_id),
                    s.index_keys(),
                    str(score + i),
                    s.ttl(self._result_ttl, now),
                    s.fields(submitted_at),
                    s.task_id,
                ]
                for i, s in enumerate(batch)
            ]
            args.append(json.dumps(group, separators=_COMPACT))
            await self._run(self._record_batch_json, [], args)
            return
        keys: list[str] = []
        for i, submission in enumerate(batch):
            indexes = submission.index_keys()
            fields = submission.fields(submitted_at)
            keys.append(records.record_key(submission.task_id))
            keys += indexes
            args += (score + i, submission.ttl(self._result_ttl, now), len(indexes), len(fields))
            args += fields
        await self._run(self._record_batch, keys, args)

    @staticmethod
    async def _run(script: AsyncScript, keys: list[str], args: list[str | int]) -> None:
        try:
            await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not record the submissions: {exc!r}") from exc

    async def _store_content(self, batch: Sequence[Submission]) -> None:
        """Each submission's attachments, raw, under its content key, before its record
        and message exist. The key lives as long as the record; the worker
        deletes it when the task ends (docs/design.md, "Attachments, inline images and
        headers"). A MULTI, so no key is ever left without its TTL."""
        now = datetime.now(UTC)
        async with self._redis.pipeline(transaction=True) as pipe:
            for submission in batch:
                if not submission.stored:
                    continue
                key = content_key(submission.task_id)
                fields = field_names(len(submission.stored))
                pipe.hset(key, mapping=dict(zip(fields, submission.stored, strict=True)))
                # A scheduled mail's files wait with it.
                pipe.expire(key, submission.ttl(self._result_ttl, now))
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
