"""Publish tasks by name. The API knows task names and payload models, never worker code."""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio
from celery import Celery
from pydantic import BaseModel

from api_service.errors import BackendUnavailable
from api_service.settings import ApiSettings
from shared_schemas.tasks import TASKS, task_routes

log = logging.getLogger(__name__)


class _PublishOnly(Celery):  # type: ignore[misc]  # celery ships no type hints
    # Celery takes CELERY_RESULT_BACKEND from the environment over anything passed or
    # configured; only backend_cls wins. Without it every send_task would SUBSCRIBE to
    # the task's result channel and UNSUBSCRIBE again (measured).
    backend_cls = "celery.backends.base:DisabledBackend"


def make_producer_app(settings: ApiSettings) -> Celery:
    """A Celery app that only publishes.

    It has no result backend on purpose: with the Redis backend configured, every
    ``send_task`` also subscribes to that task's result channel, which the API never
    reads (it reads results straight from Redis, see ``task_store``).
    """
    app = _PublishOnly("api_service", broker=settings.celery_broker_url, set_as_current=False)
    timeout = settings.redis_timeout
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        # Each task name goes to its queue (shared_schemas.tasks); nothing goes to
        # Celery's default queue, which no worker of ours reads.
        task_routes=task_routes(),
        # Each publish runs in a worker thread that holds one pooled connection; the
        # thread limiter in Dispatcher has the same size, so acquiring a connection
        # (which kombu does without a timeout) never waits.
        broker_pool_limit=settings.publish_concurrency,
        broker_connection_timeout=timeout,
        broker_transport_options={
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        },
    )
    return app


class Dispatcher:
    """Sends tasks off the event loop, bounded so the pool is never exhausted."""

    def __init__(self, app: Celery, concurrency: int) -> None:
        self._app = app
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def publish(self, task_name: str, payload: BaseModel, task_id: str) -> None:
        """Return once the broker holds the message; BackendUnavailable if it cannot."""
        contract = TASKS.get(task_name)
        if contract is None:
            raise ValueError(f"{task_name!r} is not a task of shared_schemas")
        send = functools.partial(self._send, task_name, contract.kwargs(payload), task_id)
        try:
            await anyio.to_thread.run_sync(send, limiter=self._limiter)
        except Exception as exc:
            raise BackendUnavailable(f"could not publish {task_id}: {exc!r}") from exc

    def _send(self, task_name: str, kwargs: dict[str, Any], task_id: str) -> None:
        self._app.send_task(
            task_name,
            kwargs=kwargs,
            task_id=task_id,
            # One quick reconnect (a Redis restart drops pooled connections), bounded
            # so that with REDIS_TIMEOUT=2 a caller gets 503 within 5 s, not a hang.
            retry=True,
            retry_policy={
                "max_retries": 1,
                "interval_start": 0.2,
                "interval_step": 0,
                "interval_max": 0.2,
            },
        )

    def close(self) -> None:
        self._app.close()
