"""Remember which tasks' mails the SMTP server has accepted, so a redelivered task
(after a crash, a lost worker, a requeue on shutdown) does not send its mail again.

The mark is written the moment the server answers 250 to the mail's data, before
the session is closed and before the task reports back. If Redis is restarting or
out of reach then, the write is tried again until the attempt's time limit: a relay's
250 is not forgotten because Redis blinked. Giving up is loud (an ERROR line and
``email_dispatch_ledger_write_failures``). What remains is the gap between that 250
and this write: a worker killed exactly there sends the mail once more, with the same
Message-ID (docs/delivery-guarantees.md, "The windows that remain").

The same round trip (one Lua script) stores the task's SUCCESS in Celery's result
store, as Celery's own Redis backend would (its meta, its key, its expiry, its
PUBLISH), ends the attempt (task_records) and deletes the mail's stored attachments
(shared_schemas.stored_content), so the task does not have Celery store it afterwards
(``ignore_result``): Celery's store is two more round trips per mail.
"""

from __future__ import annotations

import logging

import redis
from celery import Task, states
from redis.exceptions import RedisError

from shared_schemas import records
from shared_schemas.email import EmailResult
from shared_schemas.stored_content import content_key
from worker_service import persist
from worker_service.lua import run_script
from worker_service.metrics import LEDGER_WRITE_FAILURES
from worker_service.task_records import END_ATTEMPT_LUA, UNFINISHED, lease_key

log = logging.getLogger(__name__)

KEY_PREFIX = "email-dispatch:delivered:"

# KEYS: the task's delivery mark, its result's key, its record, its lease, its stored
# attachments. ARGV: the mark, its TTL, the result's meta, its TTL, the record's
# unfinished field, the lease's token. One command where MULTI/SET/SETEX/PUBLISH/EXEC,
# the attempt's end and a DEL were more.
_MARK_DELIVERED = (
    """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SETEX', KEYS[2], ARGV[4], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[5])
"""
    + END_ATTEMPT_LUA.replace("KEYS[1]", "KEYS[3]")
    .replace("KEYS[2]", "KEYS[4]")
    .replace("ARGV[1]", "ARGV[5]")
    .replace("ARGV[2]", "ARGV[6]")
    + "return 1\n"
)


# KEYS: the task's delivery mark, its record. ARGV: the result so far, the mark's TTL, the
# record's progress field.
_MARK_PROGRESS = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
"""


class DeliveryLedger:
    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self._client = client
        self._ttl = ttl

    @staticmethod
    def key(task_id: str) -> str:
        """Read at the start of each attempt (task_records.begin_attempt, one round trip
        with the record); ``delivered`` interprets what was read."""
        return KEY_PREFIX + task_id

    @staticmethod
    def delivered(raw: bytes | None) -> EmailResult | None:
        return EmailResult.model_validate_json(raw) if raw else None

    def mark_progress(self, task: Task, result: EmailResult, deadline: float) -> None:
        """Record that the relay took the mail for some recipients and deferred others:
        the next attempt sends to the deferred alone, and the status shows both."""
        task_id: str = task.request.id
        keys = [self.key(task_id), records.record_key(task_id)]
        args = [result.model_dump_json(), self._ttl, records.PROGRESS]
        try:
            persist.until(
                deadline,
                lambda: run_script(self._client, _MARK_PROGRESS, keys, args),
                f"record which recipients of {task_id} were sent to",
            )
        except (RedisError, OSError):
            LEDGER_WRITE_FAILURES.inc()
            log.error(
                "mail for %s was sent to some recipients, but Redis could not record it "
                "within the attempt's limit: its retry will send to them again",
                task_id,
            )

    def mark_delivered(self, task: Task, result: EmailResult, lease: str, deadline: float) -> None:
        """Mark ``task``'s mail as sent, store its SUCCESS with ``result`` and end the
        attempt holding ``lease``; through Redis errors until ``deadline``."""
        task_id: str = task.request.id
        backend = task.backend
        # Exactly what Celery's trace would store for a task registered with
        # pydantic=True: the result dumped in JSON mode, in the backend's own meta.
        meta = backend._get_result_meta(
            result=result.model_dump(mode="json"),
            state=states.SUCCESS,
            traceback=None,
            request=task.request,
        )
        meta["task_id"] = task_id
        encoded = backend.encode(meta)
        keys = [self.key(task_id), backend.get_key_for_task(task_id)]
        keys += [records.record_key(task_id), lease_key(task_id), content_key(task_id)]
        args = [result.model_dump_json(), self._ttl, encoded, backend.expires, UNFINISHED, lease]
        try:
            persist.until(
                deadline,
                # The PUBLISH is for AsyncResult.get() waiters.
                lambda: run_script(self._client, _MARK_DELIVERED, keys, args),
                f"record that the mail of {task_id} was sent",
            )
        except (RedisError, OSError):
            LEDGER_WRITE_FAILURES.inc()
            log.error(
                "mail for %s was sent, but Redis could not record it within the attempt's "
                "limit: if its message is delivered again it will be sent again",
                task_id,
            )
