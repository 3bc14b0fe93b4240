"""The base of every handler: what an attempt does before and after the task's own code.

Before: wait for the sending quota's turn (quota), take the task's lease and mark the
attempt in its record (task_records), read whether an earlier attempt delivered, and
set the attempt's deadline; or end a cancelled task there, unsent. After: end the
attempt. And payload validation errors are reported in words.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore
from pydantic import ValidationError
from redis.exceptions import RedisError

from worker_service import faults, persist, quota
from worker_service.celery_app import settings
from worker_service.delivery_ledger import DeliveryLedger
from worker_service.errors import AttemptsLost, InvalidPayload
from worker_service.metrics import QUOTA_DEFERRED, QUOTA_WAIT_SECONDS, QUOTA_WAITING
from worker_service.settings import QUOTA_DEFER_COUNTDOWN
from worker_service.task_records import Busy, Cancelled, begin_attempt, end_attempt

log = logging.getLogger(__name__)

# A lease outlives the attempt's deadline by this much: after it the attempt still
# reports (a retry's message, a FAILURE), each bounded by Redis's socket timeout.
LEASE_MARGIN = 5.0
# How soon a second copy of a running task looks again (task_records).
BUSY_COUNTDOWN = 2.0


def describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(payload)'}: {error['msg']}"
        for error in exc.errors()
    )


class ContractTask(Task):  # type: ignore[misc]  # celery ships no type hints
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        faults.reached("before_start")
        # Before the payload is validated, so a refused payload still shows it started.
        if settings.smtp_rate_limit:
            self._wait_for_turn()
        deadline = time.monotonic() + settings.task_time_limit
        begun = persist.until(
            deadline,
            lambda: begin_attempt(
                self, DeliveryLedger.key(task_id), settings.task_time_limit + LEASE_MARGIN
            ),
            f"begin an attempt of {task_id}",
        )
        if isinstance(begun, Cancelled):
            self.end_cancelled(task_id, begun.reason)
        if isinstance(begun, Busy):
            self.defer(min(begun.seconds_left, BUSY_COUNTDOWN))
        self.request.lease = begun.token
        self.request.deadline = deadline
        self.request.delivered_before = begun.value
        if begun.lost > self.max_retries:
            raise AttemptsLost(
                f"the worker running this task was lost in {begun.lost} attempts in a row "
                f"(killed, or out of memory); not trying again"
            )

    def _wait_for_turn(self) -> None:
        QUOTA_WAITING.inc()
        try:
            waited = quota.take_turn(self.backend.client, settings.smtp_rate_limit)
        finally:
            QUOTA_WAITING.dec()
        if waited is None:
            QUOTA_DEFERRED.inc()
            self.defer(QUOTA_DEFER_COUNTDOWN)
        QUOTA_WAIT_SECONDS.observe(waited)

    def end_cancelled(self, task_id: str, reason: str) -> NoReturn:
        """End a cancelled task without sending it: Celery's REVOKED state for its tools
        (the API reports the cancel from the task's record), then ``Ignore``, which
        acknowledges the message."""
        log.info("task %s was cancelled; not sending it", task_id)
        try:
            self.backend.mark_as_revoked(task_id, reason, request=self.request)
        except (RedisError, OSError):
            log.warning("could not store REVOKED for %s", task_id, exc_info=True)
        raise Ignore()

    def defer(self, countdown: float) -> NoReturn:
        """Put the task back with ``countdown``, as it is: no retry is used up and no
        state is stored. Its message is acknowledged once the copy is queued."""
        self.signature_from_request(self.request, countdown=countdown).apply_async()
        raise Ignore()

    def attempt_deadline(self) -> float:
        """When this attempt must end (``time.monotonic``)."""
        deadline: float = self.request.deadline
        return deadline

    def attempt_lease(self) -> str:
        """The token of the lease this attempt holds."""
        lease: str = self.request.lease
        return lease

    def delivered_before(self) -> bytes | None:
        """What the delivery ledger held when this attempt began."""
        raw: bytes | None = getattr(self.request, "delivered_before", None)
        return raw

    def ended(self) -> None:
        """The attempt was ended elsewhere (the delivery ledger's write)."""
        self.request.lease = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            if exc.title != self._payload_title():
                raise
            raise InvalidPayload(f"invalid {self.name} payload: {describe(exc)}") from None
        except TypeError as exc:
            # Missing or unexpected keyword arguments: the payload's shape is wrong.
            if "argument" not in str(exc):
                raise
            raise InvalidPayload(f"invalid {self.name} arguments: {exc}") from None
        finally:
            lease: str | None = getattr(self.request, "lease", None)
            if lease is not None:
                end_attempt(self, lease)

    def _payload_title(self) -> str:
        from shared_schemas.tasks import TASKS

        contract = TASKS.get(self.name)
        return contract.payload.__name__ if contract else ""
