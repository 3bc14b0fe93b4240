"""Lua scripts on Redis, each made once per process and run on whichever client.

The worker's multi-command writes are scripts (task_records, delivery_ledger, the
broker transport's unacked bookkeeping): one command to pack and one reply to parse
where a MULTI pipeline had several, just as atomic. redis-py's ``Script`` hashes each
source once and, called, sends EVALSHA and loads the source again after a NOSCRIPT (a
restarted or flushed Redis). It is called as redis-py documents it: sending the EVALSHA
past it saved under 10 % of a script call's client instructions, far below the bar for a
fast path (docs/design.md, "Fast paths and the 25 % bar").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

_scripts: dict[str, Script] = {}


def run_script(client: redis.Redis, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = client.register_script(source)
    return script(keys=keys, args=args, client=client)
