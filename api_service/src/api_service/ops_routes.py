"""Endpoints for operators and orchestrators: health, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api_service.metrics import QUEUE_DEPTH, REGISTRY, WORKERS_SEEN
from api_service.task_store import TaskStore
from shared_schemas.tasks import queues

router = APIRouter()


def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.task_store
    return store


@router.get("/healthz", summary="Liveness: the process is up (does not check Redis)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis answers (and how many workers were seen)")
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    store = _store(request)
    broker_ok = await _ping(request.app.state.broker_redis)
    results_ok = await store.ping()
    ready = broker_ok and results_ok
    workers = await store.workers_seen() if results_ok else None
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    # Workers are reported, not required: they may be scaled to zero while idle.
    return {
        "status": "ok" if ready else "unavailable",
        "checks": {"broker": broker_ok, "result_store": results_ok},
        "workers_seen": workers,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    store = _store(request)
    try:
        depths = await store.queue_depths(queues(), request.app.state.broker_redis)
        for queue, depth in depths.items():
            QUEUE_DEPTH.labels(queue).set(depth)
        WORKERS_SEEN.set(await store.workers_seen())
    except (RedisError, OSError):
        pass  # the gauges keep their last values; /readyz tells that Redis is away
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _ping(client: Any) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
