"""Build each task's message with Celery's ``send_task``, by name. The API knows task
names and payload models, never worker code.

``send_task`` runs on the event loop and does no I/O: its messages go into the broker
channel's outbox (api_service.broker_transport), and the dispatcher writes them to Redis
(api_service.dispatch).
"""

from __future__ import annotations

import contextlib

from celery import Celery
from kombu.messaging import Producer

from api_service import broker_transport
from api_service.broker_transport import BrokerCommand
from api_service.settings import ApiSettings
from api_service.submissions import Submission
from shared_schemas.tasks import TASKS, TaskContract, task_routes


class _PublishOnly(Celery):  # type: ignore[misc]  # celery ships no type hints
    # Celery takes CELERY_RESULT_BACKEND from the environment over anything passed or
    # configured; only backend_cls wins. Without it every send_task would SUBSCRIBE to
    # the task's result channel and UNSUBSCRIBE again (measured).
    backend_cls = "celery.backends.base:DisabledBackend"


def make_producer_app(settings: ApiSettings) -> Celery:
    """A Celery app that only builds task messages.

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
        broker_transport=broker_transport.PATH,
        # The channel connects once, when it is made (kombu pings the server).
        broker_pool_limit=1,
        broker_connection_timeout=timeout,
        broker_transport_options={
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        },
    )
    return app


def _kwargs_repr(contract: TaskContract) -> str:
    # What Celery shows of the arguments (Flower, `celery inspect`, events): the shape,
    # never the recipients or the body. Also spares send_task a saferepr of the mail.
    return repr({contract.argument: f"<{contract.payload.__name__}>"})


class TaskMessages:
    """Each submission's task message as the Redis commands that queue it.

    ``open()`` blocks (kombu's channel pings Redis once); call it off the event loop.
    After that, ``commands_for`` does no I/O.
    """

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._producer: Producer | None = None
        self._kwargs_reprs = {name: _kwargs_repr(contract) for name, contract in TASKS.items()}

    @property
    def is_open(self) -> bool:
        return self._producer is not None

    def open(self) -> None:
        if self._producer is None:
            producer = self._app.amqp.Producer(self._app.connection_for_write())
            producer.channel  # noqa: B018  # kombu makes the channel on first use: now
            self._producer = producer

    def commands_for(self, submission: Submission) -> list[BrokerCommand]:
        producer = self._producer
        if producer is None:
            raise RuntimeError("TaskMessages.open() first")
        # kombu 5.7: publishes inside batch() are routed and encoded at once, and handed
        # to the channel's batch, which keeps their Redis commands (broker_transport).
        with producer.batch():  # type: ignore[no-untyped-call]
            self._app.send_task(
                submission.task_name,
                kwargs=submission.kwargs,
                task_id=submission.task_id,
                producer=producer,
                argsrepr="()",
                kwargsrepr=self._kwargs_reprs[submission.task_name],
                # Nothing to declare: Celery publishes to the anonymous exchange with
                # the queue's name as routing key, which on Redis is an LPUSH to that
                # list; the worker declares its queues. Celery's default would bind a
                # copy of the queue on every publish (~15 µs, measured), through Redis.
                declare=[],
                retry=False,
            )
        channel: broker_transport.Channel = producer.channel
        return channel.take_outbox()

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.connection.release()
