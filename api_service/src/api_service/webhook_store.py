"""Each API key's webhook endpoint, in the result store (shared_schemas.webhooks).

One endpoint per key. Registering again changes the URL and keeps the signing secret, so
a receiver that moves keeps verifying; a new secret takes a DELETE, then a PUT. The
secret is kept as it is given out: the worker needs it to sign.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from shared_schemas import webhooks

# 32 random bytes: HMAC-SHA256's block-size-independent strength, inside the 24-64
# bytes the Standard Webhooks spec asks of a secret.
SECRET_BYTES = 32

# KEYS: the endpoint. ARGV: the field names (url, secret, created_at, updated_at), then
# the URL, a new secret, the time. Sets the URL; a new endpoint also gets the secret and
# its creation time. Reply: {1 when it was created else 0, the endpoint's fields}.
_PUT = """
local created = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[6])
if created == 1 then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[7])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5], ARGV[4], ARGV[7])
return {created, redis.call('HGETALL', KEYS[1])}
"""


@dataclass(frozen=True)
class Endpoint:
    url: str
    secret: str
    created_at: datetime
    updated_at: datetime


def new_secret() -> str:
    return webhooks.SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._put = client.register_script(_PUT)

    async def get(self, owner: str) -> Endpoint | None:
        try:
            fields: dict[str, str] = await self._redis.hgetall(webhooks.endpoint_key(owner))  # type: ignore[assignment]  # a decode_responses client
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not read the webhook: {exc!r}") from exc
        return _endpoint(fields)

    async def put(self, owner: str, url: str) -> tuple[Endpoint, bool]:
        """Register ``url`` for ``owner``: the endpoint, and whether it is new."""
        key = webhooks.endpoint_key(owner)
        now = datetime.now(UTC).isoformat()
        names = [webhooks.URL, webhooks.SECRET, webhooks.CREATED_AT, webhooks.UPDATED_AT]
        try:
            created, flat = await self._put(keys=[key], args=[*names, url, new_secret(), now])
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not store the webhook: {exc!r}") from exc
        endpoint = _endpoint(dict(zip(flat[::2], flat[1::2], strict=True)))
        assert endpoint is not None, "the script stores every field"
        return endpoint, bool(created)

    async def delete(self, owner: str) -> bool:
        """Remove ``owner``'s endpoint: whether there was one."""
        try:
            return bool(await self._redis.delete(webhooks.endpoint_key(owner)))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not remove the webhook: {exc!r}") from exc


def _endpoint(fields: dict[str, str]) -> Endpoint | None:
    if not fields.get(webhooks.URL) or not fields.get(webhooks.SECRET):
        return None
    return Endpoint(
        url=fields[webhooks.URL],
        secret=fields[webhooks.SECRET],
        created_at=datetime.fromisoformat(fields[webhooks.CREATED_AT]),
        updated_at=datetime.fromisoformat(fields[webhooks.UPDATED_AT]),
    )
