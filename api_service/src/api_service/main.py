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
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from api_service import logs, services
from api_service.body_limit import BodyLimitMiddleware
from api_service.errors import install_error_handlers
from api_service.metrics import MetricsMiddleware
from api_service.routes import batches, cancel, emails, listing, ops, tasks, templates, webhooks
from api_service.settings import ApiSettings

log = logging.getLogger(__name__)


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services.opened(settings) as opened:
            app.state.services = opened
            _tune_gc()
            yield

    # /docs and /redoc from Swagger UI's and Redoc's files in the fastapi-offline
    # package: no CDN, so they work air-gapped.
    app = FastAPIOffline(
        telemetry=_telemetry_config(),
        title="Email dispatch API",
        version="0.1.0",
        description=(
            "Queue emails for background delivery and follow them to the end. "
            "Authenticate with `Authorization: Bearer <api key>`."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_size=settings.max_request_bytes,
        per_path={
            "/send-email/batch": (settings.max_batch_request_bytes, "MAX_BATCH_REQUEST_BYTES")
        },
    )
    app.add_middleware(MetricsMiddleware)  # outermost: it counts the 413s too
    install_error_handlers(app)
    # GET /task-status goes first into the app's own route table rather than through
    # include_router: FastAPI matches an included router's routes twice a request, and
    # /openapi.json and the docs' routes come before it otherwise (docs/design.md,
    # "Shortcuts kept, and what each saves").
    app.router.routes[:0] = tasks.router.routes
    app.include_router(emails.router)
    app.include_router(ops.router)
    app.include_router(batches.router)
    app.include_router(listing.router)
    app.include_router(cancel.router)
    app.include_router(templates.router)
    app.include_router(webhooks.router)
    return app


def _tune_gc() -> None:
    """Once started, what the process made so far lives as long as it does
    (docs/design.md, "API": the collector's tuning)."""
    # Out of the collector's sight, a full collection no longer walks it.
    gc.freeze()
    # A young collection every 10,000 allocations instead of 700: a request allocates a
    # few hundred objects, so the default collected every request or two, each time
    # promoting the objects of the requests still in flight.
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
