"""The API's record of each submission, written from the publish thread.

Blocking redis-py on purpose: it runs in the same worker thread as ``send_task``
(api_service.dispatch), so a submission costs the event loop one thread hop and no
Redis round trip of its own. Measured here, a redis.asyncio MULTI/HSET/EXPIRE/EXEC
pipeline cost ~190 µs of CPU on the loop; the same with blocking redis-py ~100 µs.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from shared_schemas import records


class SubmissionRecorder:
    def __init__(self, client: redis.Redis, result_ttl: int) -> None:
        self._redis = client
        self._result_ttl = result_ttl

    def record(self, task_id: str, task_name: str, owner: str) -> None:
        key = records.record_key(task_id)
        fields: dict[Any, str] = {
            records.TASK: task_name,
            records.OWNER: owner,
            records.SUBMITTED_AT: datetime.now(UTC).isoformat(),
        }
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                # The worker extends this when the task finishes, so the record
                # outlives the result it describes.
                pipe.expire(key, self._result_ttl)
                pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not record {task_id}: {exc!r}") from exc

    def forget(self, task_id: str) -> None:
        """Undo a record whose publish failed, so the id is not reported as PENDING."""
        # The caller is already answering 503; if this fails too, the record
        # expires on its own. Bounded by the client's socket timeout.
        with contextlib.suppress(RedisError, OSError):
            self._redis.delete(records.record_key(task_id))

    def close(self) -> None:
        self._redis.close()
