"""Remember which tasks' mails the SMTP server has accepted, so a redelivered task
(after a crash, a lost worker, a requeue on shutdown) does not send its mail again.

The mark is written the moment the server answers 250 to the mail's data, before
the session is closed and before the task reports back. What remains is the gap
between that 250 and this write (a few milliseconds): a crash exactly there sends
the mail once more, with the same Message-ID.
"""

from __future__ import annotations

import logging

import redis
from redis.exceptions import RedisError

from shared_schemas.email import EmailResult

log = logging.getLogger(__name__)

KEY_PREFIX = "email-dispatch:delivered:"


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

    def mark_delivered(self, task_id: str, result: EmailResult) -> None:
        try:
            self._client.set(self.key(task_id), result.model_dump_json(), ex=self._ttl)
        except (RedisError, OSError):
            # The mail is out; failing the task now would only send it again.
            log.error("mail for %s was sent but could not be marked as sent", task_id)
