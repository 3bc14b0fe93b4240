"""The worker's broker transport: a fetch that pops and records a message in one step,
an idle wait that takes nothing, and one redis-py client per channel."""

from __future__ import annotations

import threading
import time
from queue import Empty

import pytest
import redis
from celery import Celery

from tests.broker_tls import assert_rediss_keeps_verified_tls
from tests.procs import RedisServer
from worker_service import broker_transport
from worker_service.celery_app import make_celery
from worker_service.lua import run_script
from worker_service.settings import WorkerSettings

pytestmark = pytest.mark.integration

DB = 10
QUEUE = "transport-test"


def _worker_app(url: str) -> Celery:
    return make_celery(WorkerSettings(celery_broker_url=url))


def test_received_and_acked_messages_reuse_one_redis_client(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _worker_app(redis_server.url(DB))
    try:
        with app.connection_for_read() as connection:
            assert isinstance(connection.transport, broker_transport.Transport)
            channel = connection.default_channel
            created = []
            create = channel._create_client

            def counting_create(*args: object, **kwargs: object) -> redis.Redis:
                client: redis.Redis = create(*args, **kwargs)
                created.append(client)
                return client

            monkeypatch.setattr(channel, "_create_client", counting_create)
            queue = connection.SimpleQueue(QUEUE)
            for n in range(3):
                queue.put({"n": n})
                message = queue.get(timeout=5)  # recorded as unacked (QoS.append)
                assert message.payload == {"n": n}
                message.ack()  # QoS.ack
            with pytest.raises(Empty):
                queue.get(timeout=0.2)  # a fetch finds nothing, then a wait
            assert len(created) == 1
            assert not redis.Redis(port=redis_server.port, db=DB).hlen("unacked")

            # After a fork or a disconnect kombu replaces the channel's pool; the
            # shared client must follow it rather than talk through the old one.
            channel._disconnect_pools()
            queue.put({"n": 3})
            queue.get(timeout=5).ack()
            assert len(created) == 2
            assert created[-1].connection_pool is channel.pool
            queue.close()
    finally:
        redis.Redis(port=redis_server.port, db=DB).flushdb()
        app.close()


def test_other_broker_schemes_keep_kombus_transport() -> None:
    app = _worker_app("sentinel://127.0.0.1:26379")
    assert app.conf.broker_transport is None
    app.close()


def test_rediss_urls_keep_verified_tls_through_the_transport() -> None:
    app = _worker_app("rediss://:secret@redis.example:6380/0")
    connection = app.connection_for_read()
    try:
        assert_rediss_keeps_verified_tls(connection, broker_transport.Transport)
    finally:
        connection.release()
        app.close()


@pytest.mark.parametrize("prefix", ["", "tenant-a:"], ids=["scripts", "global_keyprefix"])
def test_unacked_bookkeeping_is_kombus_so_kombu_restores_from_it(
    redis_server: RedisServer, prefix: str
) -> None:
    """Received messages are recorded where and as kombu records them (its restore
    reads them back to the queue), acked and rejected ones are forgotten; with a
    global_keyprefix, kombu's own code does it all."""
    app = _worker_app(redis_server.url(DB))
    if prefix:
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
    plain = redis.Redis(port=redis_server.port, db=DB)
    try:
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            queue = connection.SimpleQueue(QUEUE)
            for n in range(3):
                queue.put({"n": n})
            plain.config_resetstat()
            kept = queue.get(timeout=5)
            acked = queue.get(timeout=5)
            rejected = queue.get(timeout=5)
            index, hash_ = f"{prefix}unacked_index", f"{prefix}unacked"
            assert plain.zcard(index) == 3
            assert plain.hlen(hash_) == 3
            commands = {name.removeprefix("cmdstat_") for name in plain.info("commandstats")}
            if prefix:
                assert "multi" in commands
            else:
                # Popped and recorded by one script, never by BRPOP and a write after it.
                assert "eval" in commands
                assert not commands & {"brpop", "multi"}, commands
            acked.ack()
            rejected.reject(requeue=False)
            assert plain.hkeys(hash_) == [kept.delivery_tag.encode()]
            assert plain.zrange(index, 0, -1) == [kept.delivery_tag.encode()]

            # What a worker that died leaves behind goes back to its queue.
            channel.qos.restore_by_tag(kept.delivery_tag)
            assert plain.hlen(hash_) == 0
            assert plain.zcard(index) == 0
            again = queue.get(timeout=5)
            assert again.payload == {"n": 0}
            again.ack()
            queue.close()
    finally:
        plain.flushdb()
        plain.close()
        app.close()


def test_an_idle_channel_waits_without_taking_and_a_push_wakes_it(
    redis_server: RedisServer,
) -> None:
    """Found empty, the queue is waited on through its doorbell (XREAD), which takes
    nothing, never by BRPOP; a publisher's push rings it, and the wait ends at once
    rather than at its one-second timeout."""
    consumer_app, publisher_app = (
        _worker_app(redis_server.url(DB)),
        _worker_app(redis_server.url(DB)),
    )
    plain = redis.Redis(port=redis_server.port, db=DB)
    try:
        with (
            consumer_app.connection_for_read() as consumer,
            publisher_app.connection_for_write() as publisher,
        ):
            queue = consumer.SimpleQueue(QUEUE)
            plain.config_resetstat()
            with pytest.raises(Empty):
                queue.get(timeout=0.3)  # found empty: the channel now waits
            pushed_at: list[float] = []

            def push() -> None:
                time.sleep(0.3)
                pushed_at.append(time.monotonic())
                publisher.SimpleQueue(QUEUE).put({"n": "late"})

            pusher = threading.Thread(target=push)
            pusher.start()
            message = queue.get(timeout=5)
            woke_after = time.monotonic() - pushed_at[0]
            pusher.join()
            assert message.payload == {"n": "late"}
            assert woke_after < 0.5, woke_after  # rung, not the wait's 1 s timeout
            commands = {name.removeprefix("cmdstat_") for name in plain.info("commandstats")}
            assert "xread" in commands
            assert "brpop" not in commands
            message.ack()
            queue.close()
    finally:
        plain.flushdb()
        plain.close()
        consumer_app.close()
        publisher_app.close()


def test_a_script_is_loaded_again_after_redis_forgot_it(redis_server: RedisServer) -> None:
    """A Redis restarted without its scripts (or SCRIPT FLUSH) answers NOSCRIPT once;
    the worker's scripts load themselves again and run."""
    client = redis.Redis(port=redis_server.port, db=DB)
    try:
        source = "return redis.call('INCR', KEYS[1])"
        assert run_script(client, source, ["runs"], []) == 1
        client.script_flush()
        assert run_script(client, source, ["runs"], []) == 2
    finally:
        client.flushdb()
        client.close()
