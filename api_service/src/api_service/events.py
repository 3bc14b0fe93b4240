"""The webhook event the API itself announces: ``email.cancelled``.

A cancel is decided at the API (api_service.cancel), so the API queues the event's
``webhook.deliver`` task by name, as the worker's email handler does for delivered and
failed mails (docs/design.md, "Webhook events"). The event id is derived from the task, so a
repeated announcement is one event to a receiver that remembers ``webhook-id``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable
from api_service.webhook_store import WebhookStore
from shared_schemas.status import TaskStatus
from shared_schemas.tasks import WEBHOOK_DELIVER
from shared_schemas.webhooks import EmailEventData, EventType, WebhookDelivery, event_id

log = logging.getLogger(__name__)


async def announce_cancelled(
    dispatcher: Dispatcher, webhooks: WebhookStore, owner: str, cancelled: TaskStatus
) -> None:
    """Queue ``email.cancelled`` if the owner has an endpoint. Never raises: the cancel
    is done and answered either way; a lost event is logged."""
    try:
        if await webhooks.get(owner) is None:
            return
        data = EmailEventData(
            task_id=cancelled.task_id,
            task=cancelled.task,
            status=cancelled.status,
            tags=cancelled.tags,
            metadata=cancelled.metadata,
            error=cancelled.error,
        )
        event = WebhookDelivery(
            event_id=event_id(EventType.CANCELLED, cancelled.task_id),
            type=EventType.CANCELLED,
            owner=owner,
            created_at=datetime.now(UTC),
            data=data,
        )
        await dispatcher.publish(WEBHOOK_DELIVER, event, str(uuid.uuid4()))
    except (BackendUnavailable, OSError) as exc:
        log.error("could not queue email.cancelled for %s: %r", cancelled.task_id, exc)
