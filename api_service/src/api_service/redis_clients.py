"""The API's Redis clients, all async, on the event loop.

They use a blocking pool: under a burst a caller waits (up to ``timeout``) for a free
connection instead of failing at the pool's limit, and connecting and every reply are
bounded by the same ``timeout`` (REDIS_TIMEOUT).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def _bounded(timeout: float, max_connections: int) -> dict[str, Any]:
    return {
        "max_connections": max_connections,
        "timeout": timeout,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
    }


def connect_async(url: str, timeout: float, max_connections: int) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(url, **_bounded(timeout, max_connections))
    return aioredis.Redis.from_pool(pool)
