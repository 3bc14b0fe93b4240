"""Endpoints for operators and orchestrators: health, readiness, metrics. No key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api_service.deps import ServicesDep
from api_service.metrics import QUEUE_DEPTH, REGISTRY, WORKERS_SEEN
from api_service.models import Checks, Health, Readiness
from shared_schemas.tasks import queues

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up (does not check Redis)")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: Redis answers (and how many workers were seen)",
    response_description="Both Redis connections answer.",
    responses={
        503: {
            "model": Readiness,
            "description": "The broker or the result store did not answer; `checks` says which.",
        }
    },
)
async def readyz(services: ServicesDep, response: Response) -> Readiness:
    store = services.task_store
    broker_ok = await _ping(services.broker_redis)
    results_ok = await store.ping()
    ready = broker_ok and results_ok
    workers = await store.workers_seen() if results_ok else None
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    # Workers are reported, not required: they may be scaled to zero while idle.
    return Readiness(
        status="ok" if ready else "unavailable",
        checks=Checks(broker=broker_ok, result_store=results_ok),
        workers_seen=workers,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text format.",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(services: ServicesDep) -> Response:
    try:
        depths = await services.task_store.queue_depths(queues(), services.broker_redis)
        for queue, depth in depths.items():
            QUEUE_DEPTH.labels(queue).set(depth)
        WORKERS_SEEN.set(await services.task_store.workers_seen())
    except (RedisError, OSError):
        pass  # the gauges keep their last values; /readyz tells that Redis is away
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _ping(client: Any) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
