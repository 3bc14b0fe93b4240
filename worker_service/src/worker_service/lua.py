"""Lua scripts on Redis, each made once per process and run on whichever client.

The worker's multi-command writes are scripts (task_records, delivery_ledger, the
broker transport's unacked bookkeeping): one command to pack and one reply to parse
where a MULTI pipeline had several, just as atomic. redis-py's ``Script`` hashes its
source when made and sends EVALSHA, loading the source again after a NOSCRIPT.
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
