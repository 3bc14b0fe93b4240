"""What the routes use while the app runs, opened and closed by its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

from api_service.auth import KeyRing
from api_service.batches import Batches
from api_service.cancel import Canceller
from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable
from api_service.idempotency import IdempotencyKeys
from api_service.publisher import TaskMessages, make_producer_app
from api_service.rate_limit import RateLimiter
from api_service.redis_clients import connect_async
from api_service.settings import ApiSettings
from api_service.submissions import SubmissionRecorder
from api_service.task_index import TaskIndex
from api_service.task_store import TaskStore
from api_service.template_rendering import Renderer
from api_service.templates_store import TemplateStore
from api_service.webhook_store import WebhookStore
from api_service.webhook_targets import TargetCheck

log = logging.getLogger(__name__)

# Status reads, idempotency keys, the rate limit, probes and publishing share these.
_ASYNC_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Services:
    keyring: KeyRing
    dispatcher: Dispatcher
    task_store: TaskStore
    idempotency: IdempotencyKeys
    rate_limiter: RateLimiter
    broker_redis: aioredis.Redis
    # The lifecycle and content routes' (docs/design.md: "Listing tasks", "Batches",
    # "Scheduling and cancel", "Templates", "Webhook events").
    task_index: TaskIndex
    batches: Batches
    canceller: Canceller
    templates: TemplateStore
    renderer: Renderer
    webhooks: WebhookStore
    webhook_targets: TargetCheck


@asynccontextmanager
async def opened(settings: ApiSettings) -> AsyncIterator[Services]:
    results = connect_async(
        settings.celery_result_backend, settings.redis_timeout, _ASYNC_CONNECTIONS
    )
    broker = (
        results
        if settings.celery_broker_url == settings.celery_result_backend
        else connect_async(settings.celery_broker_url, settings.redis_timeout, _ASYNC_CONNECTIONS)
    )
    producer_app = make_producer_app(settings)
    messages = TaskMessages(producer_app)
    dispatcher = Dispatcher(
        messages,
        SubmissionRecorder(results, settings.result_ttl),
        broker,
        slot_timeout=settings.redis_timeout,
    )
    try:
        await dispatcher.open()
    except BackendUnavailable:
        # Not fatal: /readyz says so, and the first submission tries again.
        log.warning("Redis did not answer at start-up; publishing will try again")
    task_store = TaskStore(results)
    templates = TemplateStore(results)
    try:
        yield Services(
            keyring=KeyRing([key.get_secret_value() for key in settings.api_keys]),
            dispatcher=dispatcher,
            task_store=task_store,
            idempotency=IdempotencyKeys(results, settings.idempotency_ttl),
            rate_limiter=RateLimiter(results, settings.rate_limit_per_minute),
            broker_redis=broker,
            task_index=TaskIndex(results, task_store),
            batches=Batches(results, settings.result_ttl),
            canceller=Canceller(results, broker),
            templates=templates,
            renderer=Renderer(templates),
            webhooks=WebhookStore(results),
            webhook_targets=TargetCheck(
                settings.webhook_allow_private_networks, settings.webhook_timeout
            ),
        )
    finally:
        await dispatcher.close()
        messages.close()
        producer_app.close()
        await results.aclose()
        if broker is not results:
            await broker.aclose()
