"""Idempotency-Key: a retried submission returns the first one's task instead of a
second mail. Keys are scoped to the caller's API key and kept for IDEMPOTENCY_TTL."""

from __future__ import annotations

import hashlib
import json

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable

KEY_PREFIX = "email-dispatch:idempotency:"


class IdempotencyConflict(Exception):
    """The key was used before with a different payload."""


def payload_digest(payload: BaseModel) -> str:
    # The validated model, not the raw body: "to": "a@x" and "to": ["a@x"] are the same mail.
    return hashlib.sha256(payload.model_dump_json().encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, client: aioredis.Redis, ttl: int) -> None:
        self._redis = client
        self.ttl = ttl

    @staticmethod
    def _key(owner: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return f"{KEY_PREFIX}{owner}:{digest}"

    async def claim(self, owner: str, idempotency_key: str, digest: str, task_id: str) -> str:
        """The task id this key stands for: ``task_id`` if the key is new, else the
        first submission's. IdempotencyConflict if that one had another payload."""
        key = self._key(owner, idempotency_key)
        claim = json.dumps({"task_id": task_id, "digest": digest})
        try:
            if await self._redis.set(key, claim, nx=True, ex=self.ttl):
                return task_id
            existing = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not check the idempotency key: {exc!r}") from exc
        if existing is None:  # expired between the two calls: claim it again
            return await self.claim(owner, idempotency_key, digest, task_id)
        first = json.loads(existing)
        if first["digest"] != digest:
            raise IdempotencyConflict
        return str(first["task_id"])
