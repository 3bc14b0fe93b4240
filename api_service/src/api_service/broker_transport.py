"""kombu's Redis transport, keeping one redis-py client per channel.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` for every command it
sends outside the consumer loop, publishes included. With redis-py 8 that constructor
fills a table of ~200 response callbacks: measured, 86 of the ~350 µs of CPU a
``send_task`` costs (bench/, docs/performance.md). The clients all share the channel's
connection pool; a ``redis.Redis`` object holds no connection of its own and is
thread-safe, so one per channel serves every publish on it.

Used by the API's publisher through Celery's ``broker_transport`` setting, which kombu
takes over the URL's scheme (it still reads host, password, db and the ``ssl_*`` query
from the URL), so only for ``redis://`` and ``rediss://`` URLs.
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
