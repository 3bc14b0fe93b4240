"""Announce a mail's end to its owner's webhook: queue a ``webhook.deliver`` task by name.

The email handler's base (``AnnouncingTask``) does it once the outcome is stored: after
the SUCCESS (written with the delivery ledger's mark) and after Celery stored the
FAILURE. It never calls the delivery itself and never waits for it; nothing it does
here can change the mail or its status: every error is logged and counted, not raised.

Owners without an endpoint cost one Redis round trip a mail: one script reads the
task record's owner and whether that owner has an endpoint.

At least once: a task run again after its worker died once the SUCCESS was stored
finds the ledger's mark and returns it, which announces ``email.delivered`` again,
under the same event id (``shared_schemas.webhooks.event_id``), so receivers that
remember ``webhook-id`` drop the copy. An event is lost only when Redis refuses both
the read (through the attempt's deadline) and the publish (kombu's publish retries),
counted in ``email_dispatch_webhook_events_not_queued_total``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from pydantic import ValidationError

from shared_schemas import records, webhooks
from shared_schemas.email import EmailResult
from shared_schemas.status import TaskError, TaskState
from shared_schemas.tasks import TASKS, WEBHOOK_DELIVER, WEBHOOKS_QUEUE
from shared_schemas.webhooks import EmailEventData, EventType, WebhookDelivery
from worker_service import persist
from worker_service.contract_task import ContractTask
from worker_service.lua import run_script
from worker_service.metrics import WEBHOOK_EVENTS_NOT_QUEUED

log = logging.getLogger(__name__)

# How long a failure's announcement rides out a Redis outage when its attempt set no
# deadline (it failed before one was set).
_FALLBACK_WAIT = 5.0

# KEYS: the task record. ARGV: the owner, tags and metadata fields, the endpoint key
# prefix. The owner, tags and metadata (JSON, or false when none) when the owner has a
# webhook endpoint, else false. The endpoint's key is built from
# the record's owner inside the script, so it is not declared in KEYS: fine on one Redis
# (this project's broker and result store are plain Redis, never a cluster).
_OWNER_WITH_ENDPOINT = """
local found = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if found[1] and redis.call('EXISTS', ARGV[4] .. found[1]) == 1 then
  return found
end
return false
"""


class AnnouncingTask(ContractTask):
    """The email handler's base: announces delivered and failed mails."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        try:
            result = EmailResult.model_validate(retval)
        except ValidationError:
            log.exception("task %s returned no EmailResult; no webhook event", task_id)
            return
        announce(self, EventType.DELIVERED, TaskState.SUCCESS, result=result)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        error = TaskError(type=type(exc).__name__, message=str(exc))
        announce(self, EventType.FAILED, TaskState.FAILURE, error=error)


def announce(
    task: Task,
    event_type: EventType,
    status: TaskState,
    *,
    result: EmailResult | None = None,
    error: TaskError | None = None,
) -> None:
    """Queue ``event_type`` for the current task's owner, if it has an endpoint. Never
    raises: the mail's outcome is already stored, and stays as it is."""
    task_id: str = task.request.id
    deadline: float | None = getattr(task.request, "deadline", None)
    try:
        found = persist.until(
            deadline or time.monotonic() + _FALLBACK_WAIT,
            lambda: run_script(
                task.backend.client,
                _OWNER_WITH_ENDPOINT,
                [records.record_key(task_id)],
                [records.OWNER, records.TAGS, records.METADATA, webhooks.ENDPOINT_KEY_PREFIX],
            ),
            f"look up the webhook of {task_id}",
        )
        if not found:
            return
        owner, tags, metadata = found
        data = EmailEventData(
            task_id=task_id,
            task=task.name,
            status=status,
            tags=json.loads(tags) if tags else [],
            metadata=json.loads(metadata) if metadata else {},
            result=result,
            error=error,
        )
        publish(task.app, _text(owner), event_type, data)
    except Exception:
        WEBHOOK_EVENTS_NOT_QUEUED.inc()
        log.exception("could not queue the %s webhook event of %s", event_type, task_id)


def publish(app: Celery, owner: str, event_type: EventType, data: EmailEventData) -> None:
    """Send ``webhook.deliver`` by name to the webhooks queue (the worker's transport
    rings the queue's doorbell with the push)."""
    event = WebhookDelivery(
        event_id=webhooks.event_id(event_type, data.task_id),
        type=event_type,
        owner=owner,
        created_at=datetime.now(UTC),
        data=data,
    )
    app.send_task(
        WEBHOOK_DELIVER,
        kwargs=TASKS[WEBHOOK_DELIVER].kwargs(event),
        queue=WEBHOOKS_QUEUE,
        # Nobody waits for it, and it is not a child of the mail's task.
        ignore_result=True,
        add_to_parent=False,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
