"""Each API key's templates, kept in Redis with a version that only ever goes up.

Two hashes per caller (the fingerprint of its key, api_service.auth): the templates by
name, each value ``<version> <time> <JSON of its sources>``, and the last version each
name was given. The second survives a DELETE, so a version number never names two
different templates: the status of a mail says which template and version it was
rendered from, and that stays true (docs/design.md, "Templates"). Templates do not
expire.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api_service.errors import BackendUnavailable
from shared_schemas.templates import (
    MAX_TEMPLATES_PER_KEY,
    StoredTemplate,
    TemplateBody,
    TemplateVersion,
)

TEMPLATES_PREFIX = "email-dispatch:templates:"
VERSIONS_PREFIX = "email-dispatch:template-versions:"

# KEYS: the templates, the versions. ARGV: the name, "<time> <JSON>", the most templates.
# Reply: the new version, or -1 when the caller has the most templates already.
_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
local version = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1], version .. ' ' .. ARGV[2])
return version
"""

# KEYS: the templates. Reply: each name, its version and time, without the sources.
_LIST = """
local reply = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  local version, at = string.match(redis.call('HGET', KEYS[1], name), '^(%d+) (%S+) ')
  reply[#reply + 1] = name
  reply[#reply + 1] = version
  reply[#reply + 1] = at
end
return reply
"""


class TooManyTemplates(Exception):
    """The caller keeps MAX_TEMPLATES_PER_KEY templates already."""


class TemplateStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._put = client.register_script(_PUT)
        self._list = client.register_script(_LIST)

    @staticmethod
    def _keys(owner: str) -> list[str]:
        return [f"{TEMPLATES_PREFIX}{owner}", f"{VERSIONS_PREFIX}{owner}"]

    async def put(self, owner: str, name: str, body: TemplateBody) -> TemplateVersion:
        """Store ``body`` as the template's next version."""
        updated_at = datetime.now(UTC)
        stored = f"{updated_at.isoformat()} {body.model_dump_json()}"
        try:
            version = int(
                await self._put(
                    keys=self._keys(owner),
                    args=[name, stored, MAX_TEMPLATES_PER_KEY],
                )
            )
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not store the template: {exc!r}") from exc
        if version < 0:
            raise TooManyTemplates(name)
        return TemplateVersion(name=name, version=version, updated_at=updated_at)

    async def get(self, owner: str, name: str) -> StoredTemplate | None:
        try:
            raw = await self._redis.hget(self._keys(owner)[0], name)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not read the template: {exc!r}") from exc
        if raw is None:
            return None
        version, updated_at, sources = str(raw).split(" ", 2)
        return StoredTemplate.model_validate(
            {**json.loads(sources), "name": name, "version": version, "updated_at": updated_at}
        )

    async def delete(self, owner: str, name: str) -> bool:
        """Whether there was such a template. Its version number is not reused."""
        try:
            return bool(await self._redis.hdel(self._keys(owner)[0], name))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not delete the template: {exc!r}") from exc

    async def names(self, owner: str) -> list[TemplateVersion]:
        """The caller's templates, by name, without their sources."""
        try:
            flat: list[str] = await self._list(keys=self._keys(owner)[:1], args=[])
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not list the templates: {exc!r}") from exc
        found = [
            TemplateVersion(name=name, version=int(version), updated_at=datetime.fromisoformat(at))
            for name, version, at in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
        ]
        return sorted(found, key=lambda template: template.name)
