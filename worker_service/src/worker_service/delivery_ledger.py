"""Remember which tasks' mails the SMTP server has accepted, so a redelivered task
(after a crash, a lost worker, a requeue on shutdown) does not send its mail again.

The mark is written the moment the server answers 250 to the mail's data, before
the session is closed and before the task reports back. What remains is the gap
between that 250 and this write (a few milliseconds): a crash exactly there sends
the mail once more, with the same Message-ID.

The same round trip (one Lua script) stores the task's SUCCESS in Celery's result
store, as Celery's own Redis backend would (its meta, its key, its expiry, its
PUBLISH), so the task
does not have Celery store it afterwards (``ignore_result``): Celery's store is two
more round trips per mail (a GET, so as never to overwrite a SUCCESS, then
MULTI/SETEX/PUBLISH/EXEC), measured at ~16 % of a mail's time in the pool process.
"""

from __future__ import annotations

import logging

import redis
from celery import Task, states
from redis.exceptions import RedisError

from shared_schemas.email import EmailResult
from worker_service.lua import run_script

log = logging.getLogger(__name__)

KEY_PREFIX = "email-dispatch:delivered:"

# KEYS: the task's delivery mark, its result's key. ARGV: the mark, its TTL, the
# result's meta, its TTL. One command where MULTI/SET/SETEX/PUBLISH/EXEC was five.
_MARK_DELIVERED = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SETEX', KEYS[2], ARGV[4], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[3])
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

    def mark_delivered(self, task: Task, result: EmailResult) -> None:
        """Mark ``task``'s mail as sent and store its SUCCESS with ``result``."""
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
        meta_key = backend.get_key_for_task(task_id)
        try:
            # The PUBLISH is for AsyncResult.get() waiters.
            run_script(
                self._client,
                _MARK_DELIVERED,
                [self.key(task_id), meta_key],
                [result.model_dump_json(), self._ttl, encoded, backend.expires],
            )
        except (RedisError, OSError):
            # The mail is out; failing the task now would only send it again. Have
            # Celery store the SUCCESS (with its own retries) so the status is right.
            log.error("mail for %s was sent but could not be marked as sent", task_id)
            backend.store_result(task_id, meta["result"], states.SUCCESS, request=task.request)
