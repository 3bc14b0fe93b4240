"""A Task base that reports payload validation errors in words."""

from __future__ import annotations

from typing import Any

from celery import Task
from pydantic import ValidationError

from worker_service.delivery_ledger import DeliveryLedger
from worker_service.errors import InvalidPayload
from worker_service.task_records import begin_attempt


def describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(payload)'}: {error['msg']}"
        for error in exc.errors()
    )


class ContractTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """The base of every handler: records each attempt before it runs, and reports
    payload validation errors in words.

    Celery's ``pydantic=True`` raises pydantic's ValidationError, whose args are
    empty, so the stored FAILURE would carry no message. Re-raise it with the errors."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        # Before the payload is validated, so a refused payload still shows it started.
        # The same round trip reads whether an earlier attempt already delivered.
        self.request.delivered_before = begin_attempt(self, DeliveryLedger.key(task_id))

    def delivered_before(self) -> bytes | None:
        """What the delivery ledger held when this attempt began."""
        raw: bytes | None = getattr(self.request, "delivered_before", None)
        return raw

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

    def _payload_title(self) -> str:
        from shared_schemas.tasks import TASKS

        contract = TASKS.get(self.name)
        return contract.payload.__name__ if contract else ""
