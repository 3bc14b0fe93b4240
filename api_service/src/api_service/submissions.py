"""A submission, and the API's record of it, written a batch at a time.

The dispatcher (api_service.dispatch) records every submission of a batch in one round
trip, before it queues their messages.
"""

from __future__ import annotations

import contextlib
import json
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


@dataclass(frozen=True, slots=True)
class Submission:
    """One accepted task: its name, JSON-ready keyword arguments, id and owner, and the
    caller's labels (shared_schemas.labels)."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str
    owner: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


def labels_of(payload: BaseModel) -> tuple[list[str], dict[str, str]]:
    """The payload's ``tags`` and ``metadata`` fields, for a task whose payload has them."""
    return list(getattr(payload, "tags", ())), dict(getattr(payload, "metadata", {}))


# Every record of a batch in one command, atomically: a MULTI/EXEC of an HSET and an
# EXPIRE per submission cost ~2.5 times as much client CPU per record
# (packing and parsing 2n + 2 commands and replies). With each record, its entries in
# the listing indexes (docs/design.md, "Listing tasks"); entries older than the TTL
# are pruned from each index written to, so an index never outgrows the records.
# KEYS: per submission its record, its owner's index, then the index of each tag.
# ARGV: the TTL, the submission time, the oldest score kept, then per submission its
# score, task name, owner, tags and metadata as JSON ('' when none), number of tags.
_RECORD_BATCH = f"""
local ttl, oldest = ARGV[1], ARGV[3]
local indexes = {{}}
local k, a = 1, 4
while k <= #KEYS do
  local record, score = KEYS[k], ARGV[a]
  local id = string.sub(record, {len(records.KEY_PREFIX) + 1})
  local fields = {{'{records.TASK}', ARGV[a + 1], '{records.OWNER}', ARGV[a + 2],
                  '{records.SUBMITTED_AT}', ARGV[2]}}
  if ARGV[a + 3] ~= '' then
    fields[#fields + 1] = '{records.TAGS}'
    fields[#fields + 1] = ARGV[a + 3]
  end
  if ARGV[a + 4] ~= '' then
    fields[#fields + 1] = '{records.METADATA}'
    fields[#fields + 1] = ARGV[a + 4]
  end
  redis.call('HSET', record, unpack(fields))
  redis.call('EXPIRE', record, ttl)
  for j = k + 1, k + 1 + tonumber(ARGV[a + 5]) do
    redis.call('ZADD', KEYS[j], score, id)
    indexes[KEYS[j]] = true
  end
  k = k + 2 + tonumber(ARGV[a + 5])
  a = a + 6
end
for index in pairs(indexes) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. oldest)
  redis.call('EXPIRE', index, ttl)
end
return a
"""


_COMPACT = (",", ":")


# The same for a large group (a batch), every submission in one JSON argument, as
# api_service.publish_once sends a batch's messages (and why). ARGV: the TTL, the
# submission time, the oldest score kept, then per submission [its record, its indexes
# (its owner's, then its tags'), its score, task name, owner, tags and metadata as
# JSON ('' when none), task id].
_RECORD_BATCH_JSON = f"""
local ttl, oldest = ARGV[1], ARGV[3]
local indexes = {{}}
for _, s in ipairs(cjson.decode(ARGV[4])) do
  local fields = {{'{records.TASK}', s[4], '{records.OWNER}', s[5],
                  '{records.SUBMITTED_AT}', ARGV[2]}}
  if s[6] ~= '' then
    fields[#fields + 1] = '{records.TAGS}'
    fields[#fields + 1] = s[6]
  end
  if s[7] ~= '' then
    fields[#fields + 1] = '{records.METADATA}'
    fields[#fields + 1] = s[7]
  end
  redis.call('HSET', s[1], unpack(fields))
  redis.call('EXPIRE', s[1], ttl)
  for _, index in ipairs(s[2]) do
    redis.call('ZADD', index, s[3], s[8])
    indexes[index] = true
  end
end
for index in pairs(indexes) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. oldest)
  redis.call('EXPIRE', index, ttl)
end
return 1
"""
JSON_FROM = 32  # submissions; the group commit's batches (16 at most) go as arguments


def score_now() -> int:
    """A listing index's score for now: microseconds since the epoch (exact in a double)."""
    return time.time_ns() // 1000


def _as_json(submission: Submission, score: int) -> list[object]:
    """A submission as _RECORD_BATCH_JSON takes it."""
    owner, tags, metadata = submission.owner, submission.tags, submission.metadata
    return [
        records.record_key(submission.task_id),
        [records.owner_index_key(owner), *(records.tag_index_key(owner, tag) for tag in tags)],
        str(score),
        submission.task_name,
        owner,
        json.dumps(list(tags), separators=_COMPACT) if tags else "",
        json.dumps(dict(metadata), separators=_COMPACT) if metadata else "",
        submission.task_id,
    ]


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
        now = score_now()
        keys: list[str] = []
        args: list[str | int] = [
            self._result_ttl,
            datetime.fromtimestamp(now / 1e6, UTC).isoformat(),
            now - self._result_ttl * 1_000_000,
        ]
        if len(batch) >= JSON_FROM:
            args.append(json.dumps([_as_json(s, now + i) for i, s in enumerate(batch)]))
            await self._run(self._record_batch_json, [], args)
            return
        for i, submission in enumerate(batch):
            owner = submission.owner
            tags = submission.tags
            keys += (records.record_key(submission.task_id), records.owner_index_key(owner))
            keys += (records.tag_index_key(owner, tag) for tag in tags)
            args += (
                now + i,
                submission.task_name,
                owner,
                json.dumps(list(tags), separators=_COMPACT) if tags else "",
                json.dumps(dict(submission.metadata), separators=_COMPACT)
                if submission.metadata
                else "",
                len(tags),
            )
        await self._run(self._record_batch, keys, args)

    @staticmethod
    async def _run(script: AsyncScript, keys: list[str], args: list[str | int]) -> None:
        try:
            await script(keys=keys, args=args)
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
