"""Submission records and task status, read straight from the result store.

Reads use redis.asyncio, so status queries never block the event loop. Celery's
own ``AsyncResult`` would, and would also answer PENDING for ids nobody issued.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from celery.backends.base import KeyValueStoreBackend
from pydantic import ValidationError
from redis.exceptions import RedisError

from api_service.coalesced_reads import CoalescedScript
from api_service.errors import BackendUnavailable, ContractViolation
from shared_schemas import records
from shared_schemas.content import TemplateUsed
from shared_schemas.status import TaskError, TaskState, TaskStatus
from shared_schemas.tasks import TASKS

# The key Celery's key-value result backends store a task's meta under.
_META_PREFIX = KeyValueStoreBackend.task_keyprefix
# The record and Celery's meta in one command (both keys live in the result store), so
# that a status read is one entry in the coalesced pipeline (api_service.coalesced_reads).
_READ_STATUS = """
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2])}
"""


class TaskStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._read_status = CoalescedScript(client, _READ_STATUS)

    async def status(self, task_id: str, owner: str) -> TaskStatus | None:
        """The task's status, or None if this caller never submitted it."""
        flat_record, raw_meta = await self._read_status(_status_keys(task_id))
        return _status_from(task_id, owner, flat_record, raw_meta)

    async def statuses(
        self, task_ids: Sequence[str], owner: str, only: TaskState | None = None
    ) -> list[TaskStatus | None]:
        """Each task's status as ``status`` gives it, in one pipelined round trip (a
        listing page, a batch's progress); with ``only``, None for a task in another
        status."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    # EVAL, as in coalesced_reads: EVALSHA would first ask SCRIPT EXISTS.
                    pipe.eval(_READ_STATUS, 2, *_status_keys(task_id))
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not read task statuses: {exc!r}") from exc
        return [
            _status_from(task_id, owner, flat_record, raw_meta, only)
            for task_id, (flat_record, raw_meta) in zip(task_ids, replies, strict=True)
        ]

    async def workers_seen(self) -> int:
        """Worker nodes whose presence key has not lapsed (shared_schemas.records)."""
        count = 0
        async for _ in self._redis.scan_iter(match=f"{records.WORKER_KEY_PREFIX}*", count=100):
            count += 1
        return count

    async def queue_depths(self, queues: list[str], broker: aioredis.Redis) -> dict[str, int]:
        async with broker.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            lengths = await pipe.execute()
        return {queue: int(length) for queue, length in zip(queues, lengths, strict=True)}

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False


# The error type a cancelled task's status shows.
CANCELLED_ERROR = "Cancelled"


def _status_keys(task_id: str) -> list[str]:
    return [records.record_key(task_id), f"{_META_PREFIX}{task_id}"]


def _status_from(
    task_id: str,
    owner: str,
    flat_record: list[str],
    raw_meta: str | None,
    only: TaskState | None = None,
) -> TaskStatus | None:
    record = dict(zip(flat_record[::2], flat_record[1::2], strict=True))
    if not record or record.get(records.OWNER) != owner:
        return None
    meta: dict[str, Any] = json.loads(raw_meta) if raw_meta else {}
    if only is not None and _state_of(record, meta) is not only:
        return None  # a listing's status filter: not worth building (task_index)
    return _build_status(task_id, record, meta)


def _state_of(record: dict[str, str], meta: dict[str, Any]) -> TaskState:
    raw_state = meta.get("status")
    state = TaskState(str(raw_state)) if raw_state in TaskState.__members__ else TaskState.PENDING
    if state in _NOT_YET_DONE and record.get(records.ATTEMPT) == records.RUNNING:
        # The worker stores no STARTED state of its own; its record says an attempt runs.
        state = TaskState.STARTED
    elif state is TaskState.PENDING and records.SCHEDULED in record:
        state = TaskState.SCHEDULED  # in the due-time index (shared_schemas.schedule)
    if records.CANCELLED in record:
        # The cancel is the record's (api_service.cancel): no attempt starts after it,
        # and whatever Celery stored of an earlier one is not the outcome.
        state = TaskState.REVOKED
    return state


def _build_status(task_id: str, record: dict[str, str], meta: dict[str, Any]) -> TaskStatus:
    task_name = record[records.TASK]
    state = _state_of(record, meta)
    retries = int(record.get(records.RETRIES, 0))
    result = None
    error = None
    finished_at = meta.get("date_done") if state in _FINISHED else None
    if records.CANCELLED in record:
        error = TaskError(type=CANCELLED_ERROR, message=record[records.CANCELLED])
        finished_at = record.get(records.CANCELLED_AT)
    elif state is TaskState.SUCCESS:
        result = _typed_result(task_name, task_id, meta.get("result"))
    elif state in (TaskState.FAILURE, TaskState.RETRY, TaskState.REVOKED):
        error = _error_from(meta.get("result"))
    if result is None and records.PROGRESS in record:
        result = _typed_result(task_name, task_id, json.loads(record[records.PROGRESS]))
    template = record.get(records.TEMPLATE)
    return TaskStatus(
        task_id=task_id,
        task=task_name,
        status=state,
        submitted_at=datetime.fromisoformat(record[records.SUBMITTED_AT]),
        send_at=record.get(records.SEND_AT),
        started_at=record.get(records.STARTED_AT),
        finished_at=finished_at,
        retries=retries,
        template=TemplateUsed.model_validate_json(template) if template else None,
        result=result,
        error=error,
        tags=json.loads(record[records.TAGS]) if records.TAGS in record else [],
        metadata=json.loads(record[records.METADATA]) if records.METADATA in record else {},
    )


_FINISHED = {TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED}
_NOT_YET_DONE = {TaskState.PENDING, TaskState.STARTED, TaskState.RETRY}


def _typed_result(task_name: str, task_id: str, raw: Any) -> Any:
    contract = TASKS.get(task_name)
    if contract is None:
        raise ContractViolation(f"task {task_id} ran {task_name!r}, which has no contract")
    try:
        return contract.result.model_validate(raw)
    except ValidationError as exc:
        raise ContractViolation(
            f"task {task_id} finished, but its result does not match the {task_name} "
            f"contract: {exc.error_count()} error(s)"
        ) from exc


def _error_from(raw: Any) -> TaskError | None:
    """Celery stores an exception as {exc_type, exc_message: [args...], exc_module}."""
    if not isinstance(raw, dict) or "exc_type" not in raw:
        return None
    message = raw.get("exc_message", "")
    if isinstance(message, list | tuple):
        message = "; ".join(str(part) for part in message)
    return TaskError(type=str(raw["exc_type"]), message=str(message))
