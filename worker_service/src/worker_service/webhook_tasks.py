"""The ``webhook.deliver`` handler, registered by its shared name on its own queue."""

from __future__ import annotations

from celery import Task, shared_task

from shared_schemas.tasks import WEBHOOK_DELIVER
from shared_schemas.webhooks import WebhookDelivery, WebhookDeliveryResult
from worker_service import webhook_delivery
from worker_service.celery_app import settings


@shared_task(
    name=WEBHOOK_DELIVER,
    bind=True,
    pydantic=True,
    # Retried until WEBHOOK_MAX_AGE after the event, not a number of times
    # (webhook_delivery).
    max_retries=None,
    # Nobody reads a delivery's result: the receiver got the event, or the metrics and
    # the log say it did not.
    ignore_result=True,
    # Giving up is expected, and logged by webhook_delivery: no traceback from Celery.
    throws=(webhook_delivery.WebhookGivenUp,),
)
def deliver_webhook(self: Task, event: WebhookDelivery) -> WebhookDeliveryResult:
    """POST one signed event to its owner's endpoint; retried with backoff on failure."""
    return webhook_delivery.deliver(self, event, settings)
