"""Status reads are sent to Redis in batches (api_service.coalesced_reads): under
concurrency each caller still gets its own answer, and every one hears a failure."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from api_service.coalesced_reads import CoalescedScript
from api_service.errors import BackendUnavailable
from devtools.procs import free_port
from tests.procs import RedisServer

pytestmark = pytest.mark.integration

DB = 10
_GET_BOTH = "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}"


def test_concurrent_reads_each_get_their_own_reply(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url(DB))
    client.flushdb()
    client.mset({f"a{n}": f"A{n}" for n in range(200)} | {f"b{n}": f"B{n}" for n in range(200)})

    async def scenario() -> list[object]:
        async_client = aioredis.Redis.from_url(redis_server.url(DB), decode_responses=True)
        read = CoalescedScript(async_client, _GET_BOTH)
        try:
            replies = await asyncio.gather(*(read([f"a{n}", f"b{n}"]) for n in range(200)))
            lone = await read(["a7", "missing"])  # and an idle reader is answered at once
        finally:
            await async_client.aclose()
        return [*replies, lone]

    replies = asyncio.run(scenario())
    assert replies == [[f"A{n}", f"B{n}"] for n in range(200)] + [["A7", None]]
    client.flushdb()
    client.close()


def test_every_waiting_reader_hears_that_redis_is_unavailable() -> None:
    async def scenario() -> list[BaseException | object]:
        nobody = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
        read = CoalescedScript(nobody, _GET_BOTH)
        try:
            outcomes: list[BaseException | object] = await asyncio.gather(
                *(read([f"a{n}", f"b{n}"]) for n in range(20)), return_exceptions=True
            )
        finally:
            await nobody.aclose()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes), outcomes
