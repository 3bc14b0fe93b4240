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

While its queues have messages, the consumer fetches with one more script (``_FETCH``)
instead of BRPOP: it pops a message and records it as unacked in one step, so no
message is ever popped and not yet recorded (a worker killed there lost it), and it
carries the acks of the tasks finished since the last fetch. With late acks and
prefetch 1 that is one round trip per mail where there were three (fetch, record, ack):
the main process 2,023k -> 1,557k instructions a mail (docs/performance.md).

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
from contextlib import contextmanager, suppress
from queue import Empty
from time import monotonic, time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

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


# The consumer's fetch, in place of kombu's BRPOP while its queues have messages.
# KEYS: the unacked index, the unacked messages, then the queues in BRPOP's order.
# ARGV: the delivery time, the number of acks due, their tags.
# First the acks due (the same writes as _REMOVE), then the first message of the first
# queue holding one, recorded as unacked in the same script: BRPOP hands a message over
# before kombu records it, so a worker killed in between loses it; popped here it is
# never out of Redis's keeping. Recorded as kombu's QoS.append records it (the message,
# its exchange and routing key as a JSON list), read from the message's own properties.
# A message without them (not kombu's) is returned unrecorded and goes through
# QoS.append like one from BRPOP. Reply: nil when the queues are empty, else the queue,
# the message and whether it was recorded.
_FETCH = """
local due = tonumber(ARGV[2])
for i = 3, 2 + due do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
for q = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[q])
  if item then
    local ok, message = pcall(cjson.decode, item)
    local properties = ok and type(message) == 'table' and message['properties']
    local tag = type(properties) == 'table' and properties['delivery_tag']
    local info = type(properties) == 'table' and properties['delivery_info']
    if type(tag) ~= 'string' or type(info) ~= 'table' then
      return {KEYS[q], item, 0}
    end
    redis.call('ZADD', KEYS[1], ARGV[1], tag)
    redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'])
                                    .. ',' .. cjson.encode(info['routing_key']) .. ']')
    return {KEYS[q], item, 1}
  end
end
return false
"""


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.take_recorded(delivery_tag):
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]
            return
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
        if not self.channel.defer_ack(delivery_tag):
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
    # The consumer fetches with _FETCH until it finds the queues empty, then waits with
    # kombu's BRPOP until that brings a message.
    _fetching = True
    # Acks whose Redis writes ride on the next fetch (see defer_ack).
    _acks_due: list[str]
    # Acks whose writes are in the fetch on its way.
    _sending_acks: list[str]
    # Whether the command on its way is a fetch (else BRPOP).
    _fetch_sent = False
    # The tag of the message being delivered that _FETCH already recorded as unacked.
    _recorded: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._acks_due = []
        self._sending_acks = []
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def defer_ack(self, delivery_tag: str) -> bool:
        """Keep an ack's writes for the next fetch, which the event loop sends on its
        next tick: with late acks every task's ack is followed by a fetch, and one
        round trip does both. False when no fetch may follow (the channel consumes
        nothing), when one is already on its way, or with a global_keyprefix: then
        ack at once.

        Until the writes land, the message counts as unacked in Redis; a worker that
        dies meanwhile has it redelivered past the visibility timeout, like any
        message whose ack was lost, and the delivery ledger keeps that from sending
        it twice (docs/delivery-guarantees.md). The poller flushes what no fetch took
        on the same tick (Poller), and so does closing the channel.
        """
        if self.global_keyprefix or self._in_poll or not self.active_queues:
            return False
        self._acks_due.append(delivery_tag)
        return True

    def flush_acks(self) -> None:
        if not self._acks_due:
            return
        due, self._acks_due = self._acks_due, []
        try:
            for tag in due:
                self.qos._remove(tag)
        except BaseException:
            self._acks_due[:0] = due  # the script may not have run; it is idempotent
            raise

    def take_recorded(self, delivery_tag: str) -> bool:
        if self._recorded != delivery_tag:
            return False
        self._recorded = None
        return True

    def _brpop_start(self, timeout: int | None = None) -> None:
        if not self._fetching or self.global_keyprefix:
            self.flush_acks()
            super()._brpop_start(timeout)  # type: ignore[no-untyped-call]
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            self.flush_acks()
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]  # type: ignore[no-untyped-call]
        qos = self.qos
        acks, self._acks_due = self._acks_due, []
        self._sending_acks = acks
        self._fetch_sent = True
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(
            "EVAL",
            _FETCH,
            2 + len(keys),
            qos.unacked_index_key,
            qos.unacked_key,
            *keys,
            time(),
            len(acks),
            *acks,
        )

    def _brpop_read(self, **options: Any) -> bool:
        if not self._fetch_sent:
            found: bool = super()._brpop_read(**options)  # type: ignore[no-untyped-call]
            self._fetching = True  # BRPOP brought a message: the queues are busy again
            return found
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVAL", **options)
            except BaseException as exc:
                # The acks' writes may not have run; the next fetch sends them again
                # (they are idempotent).
                self._acks_due[:0] = self._sending_acks
                if isinstance(exc, self.connection_errors):
                    self.client.connection.disconnect()  # reconnects on the next fetch
                raise
            finally:
                self._sending_acks = []
            if not reply:
                self._fetching = False
                raise Empty()
            self._deliver_fetched(*reply)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._fetch_sent = False
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]

    def _deliver_fetched(self, queue_key: bytes, item: bytes, recorded: int) -> None:
        dest = bytes_to_str(queue_key).rsplit(self.sep, 1)[0]  # type: ignore[no-untyped-call]
        self._queue_cycle.rotate(dest)
        message = loads(bytes_to_str(item))  # type: ignore[no-untyped-call]
        if not recorded:
            self.connection._deliver(message, dest)
            return
        tag = self._recorded = message["properties"]["delivery_tag"]
        delivered = False
        try:
            self.connection._deliver(message, dest)
            delivered = True
        finally:
            if self._recorded is not None:  # QoS.append did not take it
                self._recorded = None
                if delivered:  # consumed without acks: nothing to keep
                    self.qos._remove(tag)
                # Not delivered: the record stays, and kombu restores the message past
                # the visibility timeout instead of losing it.

    def close(self) -> None:
        with suppress(*self.connection_errors):
            self.flush_acks()
        super().close()  # type: ignore[no-untyped-call]

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


class Poller(kombu_redis.MultiChannelPoller):
    def on_poll_start(self) -> None:
        super().on_poll_start()  # type: ignore[no-untyped-call]
        # Acks that no fetch took this tick (nothing to fetch: not consuming, or no
        # credit left) are written now rather than waiting for one.
        for channel in self._channels:
            if isinstance(channel, Channel):
                channel.flush_acks()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.cycle = Poller()  # type: ignore[no-untyped-call, assignment]
