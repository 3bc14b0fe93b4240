"""kombu's Redis transport, keeping one redis-py client per channel.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` for every command it
sends outside the consumer's BRPOP, and with late acks the worker's main process sends
two per task: the unacked bookkeeping when a message arrives (``QoS.append``) and the
ack (``QoS.ack``). With redis-py 8 that constructor fills a table of ~200 response
callbacks each time: measured in a 1 node x 1 process drain of real mails, 215-240
mails/s at 3,450-3,820 µs of worker CPU a mail with kombu's transport, 280-350 mails/s
at 2,320-2,940 µs with this one (docs/performance.md). The clients all share the
channel's connection pool; a ``redis.Redis`` holds no connection of its own and is
thread-safe, so one per channel serves every command on it.

The API has the same transport for its publishes (api_service.broker_transport); the
two services share only shared_schemas, so each keeps its own copy of these few lines.
Used through Celery's ``broker_transport`` setting, which kombu takes over the URL's
scheme (it still reads host, password, db and the ``ssl_*`` query from the URL), so
only for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis

# The URL schemes this transport serves; anything else keeps kombu's choice.
SCHEMES = ("redis", "rediss")
# For Celery's broker_transport setting.
PATH = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    _shared_client: redis.Redis | None = None

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client is not None:
            yield client
            return
        pool = self.pool  # replaced after a fork or a disconnect: follow it
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()  # type: ignore[no-untyped-call]
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
