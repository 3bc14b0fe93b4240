"""Publish tasks by name. The API knows task names and payload models, never worker code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu.messaging import Producer
from pydantic import BaseModel

from api_service import broker_transport
from api_service.errors import BackendUnavailable
from api_service.settings import ApiSettings
from api_service.submissions import SubmissionRecorder
from shared_schemas.tasks import TASKS, TaskContract, task_routes

log = logging.getLogger(__name__)

# One quick reconnect (a Redis restart drops pooled connections), bounded so that
# with REDIS_TIMEOUT=2 a caller gets 503 within 5 s, not a hang.
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0, "interval_max": 0.2}


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
        # Dispatcher publishes through a producer and connection of its own per slot,
        # not through Celery's pool; anything else that borrows from it gets as many.
        broker_pool_limit=settings.publish_concurrency,
        broker_connection_timeout=timeout,
        broker_transport_options={
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        },
    )
    if urlsplit(settings.celery_broker_url).scheme in broker_transport.SCHEMES:
        app.conf.broker_transport = broker_transport.PATH
    return app


def _kwargs_repr(contract: TaskContract) -> str:
    # What Celery shows of the arguments (Flower, `celery inspect`, events): the shape,
    # never the recipients or the body. Also spares send_task a saferepr of the mail.
    return repr({contract.argument: f"<{contract.payload.__name__}>"})


class Dispatcher:
    """Records each submission and sends its task, off the event loop.

    Each submission runs in a worker thread, at most ``concurrency`` at once (see
    ApiSettings.publish_concurrency for why few). Each of those slots has its own
    long-lived kombu producer: Celery's producer pool would
    re-create the producer's channel on every acquire (measured: 40 µs per publish).
    """

    def __init__(
        self, app: Celery, recorder: SubmissionRecorder, concurrency: int, slot_timeout: float
    ) -> None:
        self._app = app
        self._recorder = recorder
        # A plain executor, not anyio.to_thread behind a semaphore and a fail_after:
        # measured, that hop was 16 % of the event loop's CPU per submission.
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="publish")
        self._slot_timeout = slot_timeout
        self._idle: queue.LifoQueue[Producer] = queue.LifoQueue()
        self._all: list[Producer] = []
        self._kwargs_reprs = {name: _kwargs_repr(contract) for name, contract in TASKS.items()}

    async def submit(self, task_name: str, payload: BaseModel, task_id: str, owner: str) -> None:
        """Return once the submission is recorded and the broker holds its message.

        BackendUnavailable if either cannot be done; then nothing is left behind.
        """
        contract = TASKS.get(task_name)
        if contract is None:
            raise ValueError(f"{task_name!r} is not a task of shared_schemas")
        job = self._threads.submit(
            self._submit, task_name, contract.kwargs(payload), task_id, owner
        )
        # A job still waiting for a thread after slot_timeout is withdrawn: with Redis
        # frozen each thread is held for up to REDIS_TIMEOUT, and callers queued behind
        # must not wait out one another's. A running job is never withdrawn (cancel()
        # refuses): an abandoned publish could still land, and the caller must hear how
        # it ended.
        withdrawn = False

        def withdraw() -> None:
            nonlocal withdrawn
            withdrawn = job.cancel()

        timer = asyncio.get_running_loop().call_later(self._slot_timeout, withdraw)
        try:
            await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            if withdrawn:
                raise BackendUnavailable(f"no publish slot for {task_id} in time") from None
            raise
        finally:
            timer.cancel()

    def _submit(self, task_name: str, kwargs: dict[str, Any], task_id: str, owner: str) -> None:
        # Record first: a fast worker may finish before publish returns, and the
        # status endpoint must already know the id.
        self._recorder.record(task_id, task_name, owner)
        try:
            self._send(task_name, kwargs, task_id)
        except Exception as exc:
            self._recorder.forget(task_id)
            raise BackendUnavailable(f"could not publish {task_id}: {exc!r}") from exc

    def _send(self, task_name: str, kwargs: dict[str, Any], task_id: str) -> None:
        with self._producer() as producer:
            self._app.send_task(
                task_name,
                kwargs=kwargs,
                task_id=task_id,
                producer=producer,
                argsrepr="()",
                kwargsrepr=self._kwargs_reprs[task_name],
                retry=True,
                retry_policy=_RETRY_POLICY,
            )

    @contextlib.contextmanager
    def _producer(self) -> Iterator[Producer]:
        # At most `concurrency` threads get here at once, so at most that many
        # producers are ever made.
        try:
            producer = self._idle.get_nowait()
        except queue.Empty:
            producer = self._app.amqp.Producer(self._app.connection_for_write())
            self._all.append(producer)
        try:
            yield producer
        finally:
            self._idle.put(producer)

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        for producer in self._all:
            with contextlib.suppress(Exception):
                producer.connection.release()
        self._recorder.close()
        self._app.close()
