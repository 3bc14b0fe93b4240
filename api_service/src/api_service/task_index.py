"""Pages of a caller's tasks, newest first, from the listing indexes.

The indexes are sorted sets of task ids scored by submission time in microseconds, one
per owner and one per owner and tag, written with each record
(api_service.submissions). A page is one script (find the cursor, read the next
entries) and one pipelined read of the statuses (api_service.task_store), so its cost
does not grow with the number of tasks. The status filter is applied to the statuses
read: a page examines at most ``max_scan`` entries, and may come back short, or empty,
with a cursor to go on from (docs/design.md, "Listing tasks").
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from api_service.task_store import TaskStore
from shared_schemas import records
from shared_schemas.status import TaskState, TaskStatus

# KEYS[1]: the index. ARGV: the cursor's score and task id ('' on the first page), the
# lowest score wanted, how many entries. Reply: task id, score, ... newest first,
# strictly after the cursor. Ties in score order by id, as ZREVRANK counts them; a
# cursor whose entry was pruned meanwhile goes on from its score.
_PAGE = """
local count = tonumber(ARGV[4])
if ARGV[2] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[2])
  if rank then
    return redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + count, 'WITHSCORES')
  end
  return redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], ARGV[3],
                    'WITHSCORES', 'LIMIT', 0, count)
end
return redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, count)
"""


class BadCursor(ValueError):
    """The cursor is not one a page handed out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: its last entry's score and task id."""

    score: int
    task_id: str

    def encode(self) -> str:
        raw = f"{self.score}:{self.task_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            score, _, task_id = raw.partition(":")
            return cls(int(score), str(uuid.UUID(task_id)))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise BadCursor("not a cursor this API handed out; use next_cursor as given") from exc


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[TaskStatus]
    next_cursor: Cursor | None


class TaskIndex:
    def __init__(self, client: aioredis.Redis, store: TaskStore, max_scan: int = 1000) -> None:
        self._page = client.register_script(_PAGE)
        self._store = store
        self._max_scan = max_scan

    async def page(
        self,
        owner: str,
        limit: int,
        *,
        after: Cursor | None = None,
        tag: str | None = None,
        status: TaskState | None = None,
        since: datetime | None = None,
    ) -> Page:
        """Up to ``limit`` of the owner's tasks after ``after``, newest first, filtered.

        ``next_cursor`` is None once nothing is left. With a status filter, a page reads
        at most ``max_scan`` entries and may hold fewer than ``limit`` tasks while a
        cursor still follows.
        """
        index = records.tag_index_key(owner, tag) if tag else records.owner_index_key(owner)
        lowest = str(_score_of(since)) if since else "-inf"
        found: list[TaskStatus] = []
        scanned = 0
        chunk = limit
        while True:
            if status is None:  # every live entry is a task of the page
                want = limit - len(found)
            else:  # a sparse status costs a few round trips of growing reads, not ten
                want = min(chunk, self._max_scan - scanned)
                chunk *= 4
            entries = await self._entries(index, after, lowest, want)
            ids = [task_id for task_id, _ in entries]
            statuses = await self._store.statuses(ids, owner, only=status)
            for (task_id, score), task in zip(entries, statuses, strict=True):
                after = Cursor(score, task_id)
                scanned += 1
                # None: in another status, or the record expired or was withdrawn (a
                # 503) while its entry waits to be pruned.
                if task is not None:
                    found.append(task)
                    if len(found) == limit:
                        return Page(found, after)
            if len(entries) < want:
                return Page(found, None)
            if scanned >= self._max_scan:
                return Page(found, after)

    async def _entries(
        self, index: str, after: Cursor | None, lowest: str, count: int
    ) -> list[tuple[str, int]]:
        args = [after.score, after.task_id] if after else ["", ""]
        try:
            flat = await self._page(keys=[index], args=[*args, lowest, count])
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not read the task index: {exc!r}") from exc
        entries = [(str(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        if after is not None and lowest != "-inf":
            # Paging by rank does not stop at the lowest score: cut there.
            floor = int(lowest)
            entries = [entry for entry in entries if entry[1] >= floor]
        return entries


def _score_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
