"""Per-key submission rate limit, shared by every API replica through Redis.

A fixed one-minute window per API key: simple and cheap (one INCR), at the price that
a caller may send up to twice the limit across a window boundary.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable, RateLimited

KEY_PREFIX = "email-dispatch:rate:"
WINDOW = 60


class RateLimiter:
    def __init__(self, client: aioredis.Redis, per_minute: int) -> None:
        self._redis = client
        self._limit = per_minute

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    async def check(self, owner: str, count: int = 1) -> None:
        """Count ``count`` submissions for ``owner`` (a batch counts each of its mails);
        RateLimited once the window is full."""
        if not self.enabled:
            return
        now = time.time()
        window = int(now // WINDOW)
        key = f"{KEY_PREFIX}{owner}:{window}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(key, count)
                pipe.expire(key, WINDOW * 2)
                total, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not check the rate limit: {exc!r}") from exc
        if int(total) > self._limit:
            raise RateLimited(retry_after=max(1, int((window + 1) * WINDOW - now) + 1))
