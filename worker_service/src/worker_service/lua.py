"""Lua scripts on Redis, each made once per process and run on whichever client.

The worker's multi-command writes are scripts (task_records, delivery_ledger, the
broker transport's unacked bookkeeping): one command to pack and one reply to parse
where a MULTI pipeline had several, just as atomic. redis-py's ``Script`` hashes each
source once; the EVALSHA goes out through ``execute_command``, loading the source again
after a NOSCRIPT as ``Script.__call__`` does. Calling ``Script`` itself passes through
``evalsha``'s argument-deprecation wrapper and a pipeline check on every call: 49,000
instructions a mail in the pool process (2 %, callgrind, docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

_scripts: dict[str, Script] = {}


def run_script(client: redis.Redis, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = client.register_script(source)
    try:
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
    except NoScriptError:  # a restarted or flushed Redis
        script.sha = client.script_load(source)
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
