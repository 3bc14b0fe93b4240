"""Move scheduled mails onto their queues when they are due: every worker node runs this.

The API keeps a scheduled task's message in the due-time index (shared_schemas.
schedule): a sorted set by due time and a hash of messages, in the broker's database.
A thread in each node (a Celery bootstep, started and stopped with the worker) runs one
Lua script, ``_PROMOTE``, that takes the due entries on Redis's clock, pushes each
message onto its queue list, rings the queue's doorbell (shared_schemas.broker) so an
idle worker fetches it at once, and removes the entry, all in one atomic step. So with
any number of nodes each entry is promoted exactly once, and a node's crash or restart
loses nothing: the state is Redis's (docs/design.md, "Scheduling and cancel").

The thread runs the script every ``INTERVAL`` seconds, or sooner when the script says
the next entry is due sooner, so a mail reaches its queue within milliseconds of its
send_at. Then the record's "scheduled" mark is removed (the result store may be another
Redis; an attempt's start removes it too, should this step not happen).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

import redis
from celery import bootsteps
from redis.exceptions import RedisError

from shared_schemas import records
from shared_schemas.broker import DOORBELL_PREFIX
from shared_schemas.schedule import DUE_KEY, DUE_MESSAGES_KEY
from worker_service.lua import run_script
from worker_service.metrics import SCHEDULED_PROMOTED_LATENESS

log = logging.getLogger(__name__)

# Longest pause between two looks at the index: an entry added for sooner than the
# next one known is promoted at most this late. 10 scripts a second per node.
INTERVAL = 0.1
# Entries promoted per script: bounds how long one script holds Redis.
BATCH = 100
# Pause after a Redis error.
ERROR_PAUSE = 1.0
REDIS_TIMEOUT = 5

# KEYS: the index (sorted set), its messages (hash). ARGV: the doorbell prefix, the most
# entries to promote. Each due entry's message ([queue list, message], JSON) is pushed
# onto its list, the entry removed; each list pushed to gets one ring. An entry without
# a readable message (none is written so) is removed. TIME is Redis's clock: no skew
# between nodes. Reply: {promoted ids, their lateness in ms, ms until the next entry is
# due (-1: none)}.
_PROMOTE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]))
local promoted, late, rung = {}, {}, {}
for i = 1, #due, 2 do
  local id = due[i]
  local raw = redis.call('HGET', KEYS[2], id)
  local ok, entry = pcall(cjson.decode, raw or '')
  if ok and type(entry) == 'table' and type(entry[1]) == 'string'
      and type(entry[2]) == 'string' then
    redis.call('LPUSH', entry[1], entry[2])
    rung[entry[1]] = true
    promoted[#promoted + 1] = id
    late[#late + 1] = now - tonumber(due[i + 1])
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
end
for list in pairs(rung) do
  redis.call('XADD', ARGV[1] .. list, 'MAXLEN', '1', '*', 'rung', '1')
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if next_due[2] then
  wait = math.max(tonumber(next_due[2]) - now, 0)
end
return {promoted, late, wait}
"""


class Promoter:
    def __init__(self, broker: redis.Redis, results: redis.Redis) -> None:
        self._broker = broker
        self._results = results
        self._failing = False

    def promote_due(self) -> tuple[list[str], float]:
        """Promote what is due now; the promoted ids and the seconds until the next
        entry is due (``INTERVAL`` at most). Redis errors propagate."""
        promoted, late, wait_ms = run_script(
            self._broker, _PROMOTE, [DUE_KEY, DUE_MESSAGES_KEY], [DOORBELL_PREFIX, BATCH]
        )
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in promoted]
        for ms in late:
            SCHEDULED_PROMOTED_LATENESS.observe(int(ms) / 1000)
        if ids:
            self._unmark(ids)
        # 0 when more are due already (past BATCH): the next script runs at once.
        wait = INTERVAL if int(wait_ms) < 0 else min(int(wait_ms) / 1000, INTERVAL)
        return ids, wait

    def _unmark(self, ids: list[str]) -> None:
        try:
            with self._results.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hdel(records.record_key(task_id), records.SCHEDULED)
                pipe.execute()
        except (RedisError, OSError):
            # They show SCHEDULED a little longer: an attempt's start removes the mark.
            log.warning("could not mark %d promoted tasks as queued", len(ids), exc_info=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ids, wait = self.promote_due()
            except (RedisError, OSError) as exc:
                if not self._failing:
                    log.warning("could not promote due scheduled mails (%r); trying again", exc)
                self._failing = True
                wait = ERROR_PAUSE
            else:
                if self._failing:
                    log.info("promoting due scheduled mails again")
                self._failing = False
                if ids:
                    log.debug("promoted %d scheduled mails", len(ids))
            stop.wait(wait)


class DuePromoter(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type hints
    """Runs a ``Promoter`` in a daemon thread while the worker runs."""

    label = "due-time index promoter"
    requires: ClassVar[set[str]] = set()

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._broker: redis.Redis | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        # The broker URL is a redis:// or rediss:// one (TLS verified by default,
        # shared_schemas.settings): redis-py reads it as kombu does.
        self._broker = redis.Redis.from_url(
            app.conf.broker_url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        promoter = Promoter(self._broker, app.backend.client)
        self._thread = threading.Thread(
            target=promoter.run, args=(self._stop,), name="due-promoter", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REDIS_TIMEOUT + 1)
        if self._broker is not None:
            self._broker.close()
