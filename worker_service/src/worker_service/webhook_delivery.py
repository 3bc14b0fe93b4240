"""Deliver one webhook event: read the owner's endpoint, sign, call, and decide what
next (docs/design.md, "Webhook events").

- The endpoint and its secret are read from Redis at each call, by owner: the queue
  message carries neither, a ``DELETE /webhook`` stops the event's further calls (it is
  dropped), and a new URL set meanwhile gets the pending events.
- Every failed call (no answer, a non-2xx, a redirect, a refused address) is retried
  with exponential backoff and jitter, each wait capped at ``webhook_longest_wait``,
  until ``WEBHOOK_MAX_AGE`` after the event: then the event is given up and counted
  in ``email_dispatch_webhook_events_failed_total``.
- Each call is signed anew (its own ``webhook-timestamp``) under the event's one
  ``webhook-id``, so receivers can drop a copy they already processed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import redis
from celery import Task
from redis.exceptions import RedisError

from shared_schemas import webhooks
from shared_schemas.webhooks import WebhookDelivery, WebhookDeliveryResult
from worker_service import webhook_calls
from worker_service.backoff import retry_delay
from worker_service.metrics import WEBHOOK_DELIVERIES, WEBHOOK_EVENTS_FAILED
from worker_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class WebhookCallFailed(Exception):
    """A call of the endpoint failed; the event is tried again later."""


class WebhookGivenUp(Exception):
    """The endpoint did not take the event within WEBHOOK_MAX_AGE."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    secret: str


def endpoint_of(client: redis.Redis, owner: str) -> Endpoint | None:
    url, secret = client.hmget(webhooks.endpoint_key(owner), [webhooks.URL, webhooks.SECRET])
    if not url or not secret:
        return None
    return Endpoint(_text(url), _text(secret))


def deliver(task: Task, event: WebhookDelivery, settings: WorkerSettings) -> WebhookDeliveryResult:
    """One call of ``event``'s endpoint; on failure a retry (Celery's), or the end."""
    attempts = (task.request.retries or 0) + 1
    try:
        endpoint = endpoint_of(task.backend.client, event.owner)
    except (RedisError, OSError) as exc:
        _again(task, event, settings, f"could not read the endpoint: {exc!r}")
    if endpoint is None:
        WEBHOOK_DELIVERIES.labels("dropped").inc()
        log.info("webhook %s for %s dropped: no endpoint", event.event_id, event.data.task_id)
        return WebhookDeliveryResult(outcome="dropped", attempts=attempts)
    body = event.body()
    headers = webhook_calls.signed_headers(endpoint.secret, event.event_id, body, datetime.now(UTC))
    answer = webhook_calls.post(
        endpoint.url,
        body,
        headers,
        settings.webhook_timeout,
        settings.webhook_allow_private_networks,
    )
    if not answer.ok:
        WEBHOOK_DELIVERIES.labels("failed").inc()
        _again(task, event, settings, answer.reason)
    WEBHOOK_DELIVERIES.labels("delivered").inc()
    log.info("webhook %s (%s) delivered: %s", event.event_id, event.type, answer.reason)
    return WebhookDeliveryResult(outcome="delivered", attempts=attempts, status_code=answer.status)


def _again(task: Task, event: WebhookDelivery, settings: WorkerSettings, reason: str) -> NoReturn:
    """Retry after the backoff's wait, or give the event up if that would pass its age."""
    retries = task.request.retries or 0
    wait = min(
        retry_delay(retries, settings.webhook_retry_base_delay, settings.webhook_retry_max_delay),
        settings.webhook_longest_wait,
    )
    give_up_at = event.created_at + timedelta(seconds=settings.webhook_max_age)
    if datetime.now(UTC) + timedelta(seconds=wait) > give_up_at:
        WEBHOOK_EVENTS_FAILED.labels(event.type.value).inc()
        log.error(
            "webhook %s (%s) for task %s given up after %d calls: %s",
            event.event_id,
            event.type,
            event.data.task_id,
            retries + 1,
            reason,
        )
        raise WebhookGivenUp(f"not delivered within {settings.webhook_max_age:g}s: {reason}")
    log.warning(
        "webhook %s call %d failed: %s; again in %.1fs", event.event_id, retries + 1, reason, wait
    )
    raise task.retry(exc=WebhookCallFailed(reason), countdown=wait, max_retries=None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
