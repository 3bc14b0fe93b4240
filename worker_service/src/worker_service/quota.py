"""One sending quota for every worker node that shares the broker (``SMTP_RATE_LIMIT``).

Relays count mails per account, not per worker, and Celery's ``rate_limit`` is per
node. So the nodes share one schedule in Redis, the "generic cell rate algorithm": the
key holds the next free send time; each mail takes the slot ``max(now, next free)`` and
moves it on by ``1 / rate``, in one Lua script on Redis's own clock. The mail then waits
for its slot. A mail whose slot would be more than ``MAX_WAIT`` away does not take one:
it is put back with a countdown instead, so no message is held unacked much longer than
an ordinary attempt (the visibility arithmetic in settings). Waiting fails nothing and
uses up no retry (docs/design.md, "The sending quota").
"""

from __future__ import annotations

import time

import redis

from worker_service.lua import run_script
from worker_service.settings import QUOTA_MAX_WAIT as MAX_WAIT

KEY = "email-dispatch:quota:next-free"

# KEYS: the next free send time. ARGV: seconds between two sends, the longest wait.
# Reply: {1, wait} with a slot taken, {0, wait} without one (the wait it would have).
_TAKE_SLOT = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, longest = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local wait = string.format('%.6f', slot - now)
if slot - now > longest then
  return {0, wait}
end
local after = slot + interval
local keep = math.ceil((after - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', after), 'PX', keep)
return {1, wait}
"""


def take_turn(client: redis.Redis, rate: float) -> float | None:
    """Wait for this mail's turn under ``rate`` mails a second and return the seconds
    waited, or return None without waiting when the turn is more than MAX_WAIT away."""
    taken, wait = run_script(client, _TAKE_SLOT, [KEY], [1.0 / rate, MAX_WAIT])
    seconds = float(wait)
    if not taken:
        return None
    if seconds > 0:
        time.sleep(seconds)
    return seconds
