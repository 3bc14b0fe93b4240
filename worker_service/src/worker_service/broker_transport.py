"""kombu's Redis transport, with a fetch that never holds a message Redis has let go of.

kombu's consumer takes a message with ``BRPOP`` and records it as unacked in a second
command (``QoS.append``). A worker that dies between the two, or whose blocked BRPOP is
served just as it dies, loses the message: it is in no queue and not in the unacked set.
This channel does it differently (docs/design.md, "Fetching a message"):

- It *waits* without taking anything: ``XREAD BLOCK`` on its queues' doorbells
  (shared_schemas.broker), streams every publisher appends to when it pushes a message.
- It *takes* a message with one Lua script (``_FETCH``) that pops it and records it as
  unacked, exactly as ``QoS.append`` would, in one atomic step. A queue it finds empty
  returns the doorbells' last entry ids, and the next wait starts from those, so a push
  between the look and the wait still wakes it.

A wait ends after ``brpop_timeout`` (1 s) whatever happens, so a message pushed without a
ring (kombu's own restore of unacked messages) waits a second at most.

It also keeps one redis-py client per channel: kombu's ``conn_or_acquire`` builds a new
``redis.Redis`` (and its table of ~200 response callbacks) for every command outside the
consumer's own connection; with late acks that is every ack. Measured in a drain of real
mails: 3,450-3,820 µs of worker CPU a mail with kombu's, 2,320-2,940 µs with this one
(docs/design.md, "Decisions and their numbers"). A ``redis.Redis`` is thread-safe and
holds no connection of its own, so one per channel serves the pool's threads too.

Everything else (acks, restoring unacked messages past the visibility timeout,
requeueing at shutdown) is kombu's own code, and with a ``global_keyprefix`` (whose
prefixing client does not look inside scripts) so is the fetch.

The names of kombu's it relies on are checked by tests/test_kombu_internals.py; the
dependency is pinned below the next minor release in worker_service/pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from shared_schemas.broker import DOORBELL_PREFIX, doorbell_key
from worker_service import faults

# The URL schemes this transport serves; anything else keeps kombu's choice.
SCHEMES = ("redis", "rediss")
# For Celery's broker_transport setting.
PATH = f"{__name__}:Transport"

# KEYS: the unacked index (a sorted set by delivery time), the unacked messages (a hash
# by delivery tag), then the queues in BRPOP's order. ARGV: the delivery time, the
# doorbell prefix.
# The first message of the first queue holding one, recorded as unacked in the same
# step, as kombu's QoS.append records it (the message, its exchange and routing key as
# a JSON list), read from the message's own properties. A message without them (not
# kombu's) is returned unrecorded and goes through QoS.append like one from BRPOP.
# Reply: {queue, message, recorded} or, when every queue is empty, {false, ids}: the
# last entry id of each queue's doorbell ('0-0' for none yet), to wait from.
_FETCH = """
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
local ids = {}
for q = 3, #KEYS do
  local last = redis.call('XREVRANGE', ARGV[2] .. KEYS[q], '+', '-', 'COUNT', 1)
  ids[#ids + 1] = last[1] and last[1][1] or '0-0'
end
return {false, ids}
"""


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.take_recorded(delivery_tag):
            # _FETCH recorded it already: only the in-memory bookkeeping is left.
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        super().append(message, delivery_tag)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: redis.Redis | None = None
    # Where the next wait starts in each doorbell, after a fetch found the queues empty;
    # None: fetch next.
    _wait_from: list[bytes] | None = None
    # The keys of the command on its way: a fetch's queues, or a wait's doorbells.
    _sent: tuple[str, list[str]] | None = None
    # The tag of the message being delivered that _FETCH already recorded as unacked.
    _recorded: str | None = None

    def take_recorded(self, delivery_tag: str) -> bool:
        if self._recorded != delivery_tag:
            return False
        self._recorded = None
        return True

    def _brpop_start(self, timeout: int | None = None) -> None:
        if self.global_keyprefix:
            super()._brpop_start(timeout)  # type: ignore[no-untyped-call]
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]  # type: ignore[no-untyped-call]
        connection = self.client.connection
        if self._wait_from is None:
            qos = self.qos
            self._sent = ("EVAL", keys)
            args: list[Any] = ["EVAL", _FETCH, 2 + len(keys), qos.unacked_index_key]
            args += [qos.unacked_key, *keys, time(), DOORBELL_PREFIX]
        else:
            block_ms = int((timeout or self.brpop_timeout) * 1000)
            self._sent = ("XREAD", keys)
            args = ["XREAD", "BLOCK", block_ms, "STREAMS"]
            args += [*(doorbell_key(key) for key in keys), *self._wait_from]
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        connection.send_command(*args)

    def _brpop_read(self, **options: Any) -> bool:
        if self._sent is None:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        command, keys = self._sent
        try:
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # reconnects on the next fetch
                self._wait_from = None
                raise
            if command == "XREAD":
                # Rung, or a second went by: look at the queues again.
                self._wait_from = None
                if reply:
                    faults.reached("woken")
                raise Empty()
            queue_key, item_or_ids = reply[0], reply[1]
            if not queue_key:
                ids = item_or_ids
                self._wait_from = ids if len(ids) == len(keys) else None
                raise Empty()
            faults.reached("fetched")
            self._deliver_fetched(queue_key, item_or_ids, reply[2])
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._sent = None
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]

    def _deliver_fetched(self, queue_key: bytes, item: bytes, recorded: int) -> None:
        dest = bytes_to_str(queue_key).rsplit(self.sep, 1)[0]  # type: ignore[no-untyped-call]
        self._queue_cycle.rotate(dest)
        message = loads(bytes_to_str(item))  # type: ignore[no-untyped-call]
        if recorded:
            self._recorded = message["properties"]["delivery_tag"]
        try:
            self.connection._deliver(message, dest)
        finally:
            # Consumed without acks, QoS.append does not run: the record stays and
            # kombu restores the message past the visibility timeout (nothing lost).
            self._recorded = None

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's push (a retry's new message, a task this worker sends by name), then
        the ring of the queue's doorbell, so idle workers wake for it."""
        super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
        if self.global_keyprefix or kwargs.get("_publish_batch") is not None:
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client:
            client.xadd(doorbell_key(key), {"rung": 1}, maxlen=1)

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client is not None:
            yield client
            return
        if self._pool is None and getattr(self.connection, "client", None) is None:
            # The connection is closed (lost, or shutting down) and kombu can make no
            # pool: fail as a lost connection does, which kombu and Celery expect
            # (restoring unacked messages at close, a late ack), not with the
            # AttributeError kombu's pool property would raise.
            raise redis.ConnectionError("the broker connection is closed")
        pool = self.pool  # replaced after a fork or a disconnect: follow it
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()  # type: ignore[no-untyped-call]
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
