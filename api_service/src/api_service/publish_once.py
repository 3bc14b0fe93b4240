"""Write a batch's task messages so that each task is queued at most once, however
many times the batch is sent.

A write whose reply is lost may have run. Sent again as it was, it could queue its
messages twice; not sent again, the caller cannot be told whether it was queued. So the
messages go in one Lua script that first sets a marker per task id (SET NX, kept as
long as each message asks) and runs kombu's commands for a task's message only when its
marker was new: the same batch sent twice queues each message once, and the dispatcher
can send an uncertain batch again (api_service.dispatch).

While a task's marker lives, it also tells whether the task was queued (``was_queued``):
a submission with an Idempotency-Key keeps its marker as long as its key, so a replay of
a submission whose outcome was unknown queues it, once, if it was not queued.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from api_service.broker_transport import BrokerCommand
from shared_schemas.broker import DOORBELL_PREFIX

# Where the markers live, in the broker's database beside the queues.
MARKER_PREFIX = "email-dispatch:published:"

# KEYS: each task's marker. ARGV: the doorbell prefix, then for each task its marker's
# TTL and the number of its commands, and for each command its name, its number of
# arguments and the arguments. Each queue list pushed to has its doorbell rung once
# (shared_schemas.broker), so idle workers wake for it.
_QUEUE_ONCE = """
local at = 2
local rung = {}
for _, marker in ipairs(KEYS) do
  local fresh = redis.call('SET', marker, '1', 'NX', 'EX', ARGV[at])
  local commands = tonumber(ARGV[at + 1])
  at = at + 2
  for _ = 1, commands do
    local name, count = ARGV[at], tonumber(ARGV[at + 1])
    if fresh then
      redis.call(name, unpack(ARGV, at + 2, at + 1 + count))
      if string.lower(name) == 'lpush' then
        rung[ARGV[at + 2]] = true
      end
    end
    at = at + 2 + count
  end
end
for queue in pairs(rung) do
  redis.call('XADD', ARGV[1] .. queue, 'MAXLEN', '1', '*', 'rung', '1')
end
return #KEYS
"""


# The same for a large group (a batch: api_service.dispatch, submit_all), its tasks in
# one JSON argument: redis-py packs each argument by copying its growing buffer (up to
# 6 kB) again, which for a batch of 500 cost more CPU than everything else it does.
# The long strings (the messages themselves) travel raw, one after the other in a third
# argument, each named in the JSON by its first and last byte there: escaped into JSON
# they cost the API its largest encoding and Redis the decoding, for ~10 % more bytes.
# ARGV[1]: the doorbell prefix; ARGV[2]: per task [its marker, the marker's TTL, its
# commands, each [name, arguments...]], an argument in ARGV[3] as [first, last];
# ARGV[3]: those arguments.
_QUEUE_ONCE_JSON = """
local rung = {}
local messages = cjson.decode(ARGV[2])
local spilled = ARGV[3]
for _, message in ipairs(messages) do
  if redis.call('SET', message[1], '1', 'NX', 'EX', message[2]) then
    for _, command in ipairs(message[3]) do
      for i = 2, #command do
        local arg = command[i]
        if type(arg) == 'table' then
          command[i] = string.sub(spilled, arg[1], arg[2])
        end
      end
      redis.call(unpack(command))
      if string.lower(command[1]) == 'lpush' then
        rung[command[2]] = true
      end
    end
  end
end
for queue in pairs(rung) do
  redis.call('XADD', ARGV[1] .. queue, 'MAXLEN', '1', '*', 'rung', '1')
end
return #messages
"""
# Groups larger than this go as JSON; the group commit's (16 at most) as arguments.
JSON_FROM = 32
# Strings from this long travel in ARGV[3] rather than in the JSON.
SPILL_FROM = 64


def marker_key(task_id: str) -> str:
    return f"{MARKER_PREFIX}{task_id}"


class PublishOnce:
    def __init__(self, broker: aioredis.Redis) -> None:
        self._broker = broker
        self._script = broker.register_script(_QUEUE_ONCE)
        self._script_json = broker.register_script(_QUEUE_ONCE_JSON)

    async def __call__(self, messages: Sequence[tuple[str, int, list[BrokerCommand]]]) -> None:
        """Queue each ``(task_id, marker_ttl, commands)`` message whose task was not
        queued before.

        Raises what redis-py raises; then the batch may or may not have been written,
        and sending it again is safe.
        """
        if len(messages) >= JSON_FROM:
            encoded, spilled = _as_json(messages)
            await self._script_json(args=[DOORBELL_PREFIX, encoded, spilled])
            return
        keys = [marker_key(task_id) for task_id, _, _ in messages]
        args: list[str | int | bytes] = [DOORBELL_PREFIX]
        for _, marker_ttl, commands in messages:
            args += (marker_ttl, len(commands))
            for name, command_args in commands:
                args += (name, len(command_args), *command_args)
        await self._script(keys=keys, args=args)

    async def was_queued(self, task_id: str) -> bool:
        """Whether the task's message was queued; known only while its marker lives."""
        return bool(await self._broker.exists(marker_key(task_id)))


def _as_json(messages: Sequence[tuple[str, int, list[BrokerCommand]]]) -> tuple[str, bytes]:
    """ARGV[2] and ARGV[3] of _QUEUE_ONCE_JSON."""
    spilled: list[bytes] = []
    end = 0  # of ARGV[3] so far, in bytes; Lua counts from 1
    group: list[list[object]] = []
    for task_id, marker_ttl, commands in messages:
        encoded: list[list[object]] = []
        for name, args in commands:
            command: list[object] = [name]
            for arg in args:
                if isinstance(arg, str) and len(arg) >= SPILL_FROM:
                    data = arg.encode()
                    spilled.append(data)
                    command.append([end + 1, end + len(data)])
                    end += len(data)
                else:
                    command.append(arg)
            encoded.append(command)
        group.append([marker_key(task_id), marker_ttl, encoded])
    return json.dumps(group), b"".join(spilled)
