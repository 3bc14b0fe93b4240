"""The ASGI app: ``uvicorn api_service.main:app``."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from pydantic import ValidationError

from api_service import (
    logs,
    openapi_docs,
    ops_routes,
    routes,
    routes_batches,
    routes_lifecycle,
    routes_listing,
    routes_templates,
    webhook_routes,
)
from api_service.auth import KeyRing
from api_service.batches import Batches
from api_service.cancel import Canceller
from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable, install_error_handlers
from api_service.idempotency import IdempotencyKeys
from api_service.metrics import MetricsMiddleware
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


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.keyring = KeyRing([key.get_secret_value() for key in settings.api_keys])
        results = connect_async(
            settings.celery_result_backend, settings.redis_timeout, _ASYNC_CONNECTIONS
        )
        broker = (
            results
            if settings.celery_broker_url == settings.celery_result_backend
            else connect_async(
                settings.celery_broker_url, settings.redis_timeout, _ASYNC_CONNECTIONS
            )
        )
        app.state.broker_redis = broker
        app.state.task_store = TaskStore(results)
        # Tags, listing and batches (docs/design.md, "Listing tasks", "Batches").
        app.state.task_index = TaskIndex(results, app.state.task_store)
        app.state.batches = Batches(results, settings.result_ttl)
        app.state.idempotency = IdempotencyKeys(results, settings.idempotency_ttl)
        app.state.rate_limiter = RateLimiter(results, settings.rate_limit_per_minute)
        app.state.webhooks = WebhookStore(results)
        app.state.webhook_targets = TargetCheck(
            settings.webhook_allow_private_networks, settings.webhook_timeout
        )
        app.state.template_store = TemplateStore(results)
        app.state.template_renderer = Renderer(app.state.template_store)
        app.state.canceller = Canceller(results, broker)  # DELETE /tasks/{id}
        producer_app = make_producer_app(settings)
        messages = TaskMessages(producer_app)
        dispatcher = Dispatcher(
            messages,
            SubmissionRecorder(results, settings.result_ttl),
            broker,
            slot_timeout=settings.redis_timeout,
        )
        app.state.dispatcher = dispatcher
        try:
            await dispatcher.open()
        except BackendUnavailable:
            # Not fatal: /readyz says so, and the first submission tries again.
            log.warning("Redis did not answer at start-up; publishing will try again")
        _tune_gc()
        yield
        await dispatcher.close()
        messages.close()
        producer_app.close()
        await results.aclose()
        if broker is not results:
            await broker.aclose()

    app = FastAPI(
        telemetry=_telemetry_config(),
        title="Email dispatch API",
        version="0.1.0",
        description=(
            "Queue emails for background delivery and follow them to the end. "
            "Authenticate with `Authorization: Bearer <api key>`."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware)
    install_error_handlers(app)
    routes.add_routes(app, settings.max_request_bytes)
    openapi_docs.install(app)
    app.include_router(ops_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(routes_templates.router)
    app.include_router(routes_lifecycle.router)  # DELETE /tasks/{id}: cancel
    app.include_router(routes_listing.router)
    app.include_router(routes_batches.build_router(settings.max_batch_request_bytes))
    return app


def _tune_gc() -> None:
    """Once started: what the process made so far lives as long as it does."""
    # Out of the collector's sight, a full collection no longer walks it: measured under
    # the enqueue load, full collections went from ~38 ms each (up to 58) to ~3 ms, and
    # /healthz's p99 under load followed (docs/performance.md).
    gc.freeze()
    # A young collection every 10,000 allocations instead of 700: a request allocates a
    # few hundred objects, so the default collected every request or two, each time
    # promoting the objects of the requests still in flight. Measured: +7 % submissions/s.
    gc.set_threshold(10_000, *gc.get_threshold()[1:])


def _telemetry_config() -> TelemetryConfig:
    """FastAPI's native OpenTelemetry, on only where the process is set up for it."""
    # FastAPI looks up the global OpenTelemetry providers on every request to see
    # whether to instrument it: measured, ~5 % of a submission's CPU with none set up.
    # Setting OpenTelemetry up (the SDK, opentelemetry-instrument) takes OTEL_*
    # variables, so any of them turns it back on.
    if any(name.startswith("OTEL_") for name in os.environ):
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def _load_settings() -> ApiSettings:
    try:
        return ApiSettings()  # API_KEYS and the rest come from the environment
    except ValidationError as exc:
        # Names and messages only: the values may be secrets.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        sys.exit(f"api_service: bad configuration: {problems}")


_settings = _load_settings()
_settings.allow_special_use_domains()  # ALLOWED_SPECIAL_USE_DOMAINS, for the shared models
logs.configure(_settings.log_format, _settings.log_level, _settings.access_log)
app = create_app(_settings)
