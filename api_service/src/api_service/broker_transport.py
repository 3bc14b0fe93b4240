"""kombu's Redis transport, publishing into an outbox instead of onto the network.

The API publishes with Celery's ``send_task``, by name, inside a kombu 5.7 publish
batch (``Producer.batch()``). kombu's Redis channel routes each message and hands the
batch the Redis commands that would queue it (an ``LPUSH`` of the message to its queue's
list, plus a ``PEXPIRE`` for queues with an expiry). A kombu batch would then run them
in a blocking redis-py pipeline; this channel's batch keeps them in the channel's
``outbox`` instead, and the dispatcher (api_service.dispatch) writes them with
redis.asyncio, on the event loop, several submissions' worth per round trip.

So Celery builds the message, kombu routes and encodes it exactly as it would, and no
thread blocks on Redis: measured under the enqueue load, a publish thread spent ~195 µs
per submission against ~120 µs for the same work alone, waiting for the GIL and waking
up (docs/design.md, "Publishing on the event loop").

Used through Celery's ``broker_transport`` setting, which kombu takes over the URL's
scheme (it still reads host, password, db and the ``ssl_*`` query from the URL); the
API's settings take only ``redis://`` and ``rediss://`` URLs. The channel does talk to
Redis once, when it is made: kombu's Redis channel pings its server.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

# For Celery's broker_transport setting.
PATH = f"{__name__}:Transport"

BrokerCommand = tuple[str, tuple[Any, ...]]


class _OutboxBatch:
    """What kombu's ``Producer.batch()`` publishes through: collects the Redis commands
    of each message and, when the batch ends, moves them to the channel's outbox."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._commands: list[BrokerCommand] = []

    def publish(self, message: Any, **kwargs: Any) -> Any:
        # kombu's Redis channel routes the message and calls add() with its commands.
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)  # type: ignore[no-untyped-call]

    def add(self, name: str, *args: Any) -> None:
        self._commands.append((name, args))

    def flush(self) -> None:
        self.channel.outbox.extend(self._commands)
        self._commands = []

    def discard(self) -> None:
        self._commands = []

    def close(self) -> None:
        self._commands = []


class Channel(kombu_redis.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.outbox: list[BrokerCommand] = []
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    @property
    def supports_batch_publish(self) -> bool:
        # kombu batches only where a pipeline is never re-run; this one runs nothing.
        return True

    def create_publish_batch(self, max_size: int) -> _OutboxBatch:
        return _OutboxBatch(self)

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if kwargs.get("_publish_batch") is None:
            # A publish outside a batch would block the event loop on Redis.
            raise RuntimeError("publish through api_service.publisher.TaskMessages")
        super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]

    def take_outbox(self) -> list[BrokerCommand]:
        commands, self.outbox = self.outbox, []
        return commands


class Transport(kombu_redis.Transport):
    Channel = Channel
