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

Its QoS also keeps kombu's unacked bookkeeping in one Lua script each for the append and
the ack, where kombu sends MULTI/ZADD/HSET/EXEC and MULTI/ZREM/HDEL/EXEC: the same
writes, as atomic, for one command to pack and one reply to parse instead of four. The
two were a third of the main process's CPU per mail (profiled, docs/performance.md).
kombu's own code does everything else with the keys (restoring unacked messages past
the visibility timeout, requeueing on shutdown), and all of it when a
``global_keyprefix`` is set (its prefixing client does not look inside scripts).

The API has the same transport for its publishes (api_service.broker_transport); the
two services share only shared_schemas, so each keeps its own copy of these few lines.
Used through Celery's ``broker_transport`` setting, which kombu takes over the URL's
scheme (it still reads host, password, db and the ``ssl_*`` query from the URL), so
only for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from worker_service.lua import run_script

# The URL schemes this transport serves; anything else keeps kombu's choice.
SCHEMES = ("redis", "rediss")
# For Celery's broker_transport setting.
PATH = f"{__name__}:Transport"


# KEYS: the unacked index (a sorted set by delivery time), the unacked messages (a hash
# by delivery tag). ARGV: the delivery time, the tag, the message as kombu stores it.
_APPEND = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
# KEYS: the same. ARGV: the tag.
_REMOVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.global_keyprefix:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        delivery = message.delivery_info
        stored = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])  # type: ignore[no-untyped-call]
        with self.channel.conn_or_acquire() as client:
            run_script(
                client,
                _APPEND,
                [self.unacked_index_key, self.unacked_key],
                [time(), delivery_tag, stored],
            )
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        if self.channel.global_keyprefix:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
            return
        self._remove(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue or self.channel.global_keyprefix:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
            return
        self._remove(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def _remove(self, delivery_tag: str) -> None:
        with self.channel.conn_or_acquire() as client:
            run_script(client, _REMOVE, [self.unacked_index_key, self.unacked_key], [delivery_tag])


class Channel(kombu_redis.Channel):
    QoS = QoS
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
