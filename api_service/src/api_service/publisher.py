"""Publish tasks by name, a batch at a time. The API knows task names and payload
models, never worker code.

Runs in the Dispatcher's publish threads (api_service.dispatch), never on the event
loop: ``send_task`` and the record writes block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from celery import Celery
from kombu.messaging import Producer

from api_service import broker_transport
from api_service.errors import BackendUnavailable
from api_service.settings import ApiSettings
from api_service.submissions import Submission, SubmissionRecorder
from shared_schemas.tasks import TASKS, TaskContract, task_routes

# Redis commands one publish batch may buffer before kombu flushes it early. A batch of
# ours holds at most Dispatcher's max_batch messages, one LPUSH each; this only keeps
# kombu from splitting it.
_KOMBU_BATCH_COMMANDS = 1024


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
        # Each publish thread has a producer and connection of its own, not one from
        # Celery's pool; anything else that borrows from it gets as many.
        broker_pool_limit=settings.publish_concurrency,
        broker_connection_timeout=timeout,
        # No retry_on_timeout (nor redis-py retries): kombu batches publishes only on
        # connections that never re-run a pipeline (kombu.transport.redis
        # _batch_publish_retry_safe), since a re-run could queue a message twice.
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


class BatchPublisher:
    """Records a batch of submissions and sends their tasks, two round trips in all.

    One per publish thread: its kombu producer is long-lived (Celery's producer pool
    would re-create the channel on every acquire, measured at 40 µs a publish) and not
    shared between threads (kombu keeps a batch per producer and thread).
    """

    def __init__(self, app: Celery, recorder: SubmissionRecorder) -> None:
        self._app = app
        self._recorder = recorder
        self._producer: Producer | None = None
        self._kwargs_reprs = {name: _kwargs_repr(contract) for name, contract in TASKS.items()}

    def publish(self, batch: Sequence[Submission]) -> None:
        """Return once every submission of ``batch`` is recorded and the broker holds
        its message.

        BackendUnavailable if that cannot be done; then the batch's records are removed
        again. As with any write whose reply is lost, the broker may still hold some of
        the messages (kombu: "delivery is uncertain").
        """
        # Record first: a fast worker may finish before the publish returns, and the
        # status endpoint must already know the id.
        self._recorder.record(batch)
        try:
            self._send(batch)
        except Exception as exc:
            self._recorder.forget([submission.task_id for submission in batch])
            raise BackendUnavailable(f"could not publish: {exc!r}") from exc

    def _send(self, batch: Sequence[Submission]) -> None:
        producer = self._producer_for_this_thread()
        # kombu 5.7: publishes inside batch() are buffered in one Redis pipeline and
        # sent in one round trip when the block ends. Measured, a send_task costs ~230 µs
        # of CPU alone and ~100-120 µs in batches of 8 to 32 (docs/performance.md).
        with producer.batch(max_size=_KOMBU_BATCH_COMMANDS):  # type: ignore[no-untyped-call]
            for submission in batch:
                self._app.send_task(
                    submission.task_name,
                    kwargs=submission.kwargs,
                    task_id=submission.task_id,
                    producer=producer,
                    argsrepr="()",
                    kwargsrepr=self._kwargs_reprs[submission.task_name],
                    # Nothing to declare: Celery publishes to the anonymous exchange with
                    # the queue's name as routing key, which on Redis is an LPUSH to
                    # that list; the worker declares its queues. Celery's default would
                    # bind a copy of the queue on every publish (~15 µs, measured).
                    declare=[],
                    # No retry: a batch whose round trip failed may have been queued,
                    # and sending it again could queue its messages twice. The callers
                    # hear 503 and may retry with their Idempotency-Key.
                    retry=False,
                )

    def _producer_for_this_thread(self) -> Producer:
        if self._producer is None:
            self._producer = self._app.amqp.Producer(self._app.connection_for_write())
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.connection.release()
