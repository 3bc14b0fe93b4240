"""The API's Redis clients, all async, on the event loop.

They use a blocking pool: under a burst a caller waits (up to ``timeout``) for a free
connection instead of failing at the pool's limit, and connecting and every reply are
bounded by the same ``timeout`` (REDIS_TIMEOUT).

They never re-send a command by themselves. A write whose reply was lost may have run:
sent again, a batch of messages (api_service.dispatch) could be queued twice. The caller
hears 503 instead, and may retry with its Idempotency-Key.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def _bounded(timeout: float, max_connections: int) -> dict[str, Any]:
    return {
        "max_connections": max_connections,
        "timeout": timeout,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), retries=0),
        "retry_on_timeout": False,
    }


def connect_async(url: str, timeout: float, max_connections: int) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(url, **_bounded(timeout, max_connections))
    return aioredis.Redis.from_pool(pool)
