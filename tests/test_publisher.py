"""The API's publisher: kombu's Redis transport with one client per channel."""

from __future__ import annotations

import ssl
import uuid

import pytest
import redis
from celery import Celery

from api_service import broker_transport
from api_service.dispatch import make_producer_app
from api_service.settings import ApiSettings
from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL
from tests.procs import RedisServer

DB = 9


def _publisher(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Celery:
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    url = redis_server.url(DB)
    return make_producer_app(ApiSettings(api_keys="k", celery_broker_url=url))


def test_publishes_reuse_one_redis_client_per_channel(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _publisher(redis_server, monkeypatch)
    queue = redis.Redis(port=redis_server.port, db=DB)
    try:
        with app.connection_for_write() as connection:
            assert isinstance(connection.transport, broker_transport.Transport)
            producer = app.amqp.Producer(connection)
            clients = set()
            for _ in range(3):
                app.send_task(SEND_EMAIL, kwargs={}, task_id=str(uuid.uuid4()), producer=producer)
                with producer.channel.conn_or_acquire() as client:
                    clients.add(id(client))
            assert len(clients) == 1
            assert queue.llen(EMAIL_QUEUE) == 3

            # After a fork or a disconnect kombu replaces the channel's pool; the
            # shared client must follow it rather than talk through the old one.
            producer.channel._disconnect_pools()
            app.send_task(SEND_EMAIL, kwargs={}, task_id=str(uuid.uuid4()), producer=producer)
            with producer.channel.conn_or_acquire() as client:
                assert client.connection_pool is producer.channel.pool
                assert id(client) not in clients
            assert queue.llen(EMAIL_QUEUE) == 4
    finally:
        queue.delete(EMAIL_QUEUE)
        app.close()


def test_other_broker_schemes_keep_kombus_transport() -> None:
    sentinel = make_producer_app(
        ApiSettings(api_keys="k", celery_broker_url="sentinel://127.0.0.1:26379")
    )
    assert sentinel.conf.broker_transport is None
    sentinel.close()


def test_rediss_urls_keep_verified_tls_through_the_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kombu turns TLS on from the URL's ``ssl_*`` query (which the settings add for
    rediss://), not from the transport's name; ours must still get it."""
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    url = "rediss://:secret@redis.example:6380/0"
    app = make_producer_app(ApiSettings(api_keys="k", celery_broker_url=url))
    connection = app.connection_for_write()
    try:
        assert isinstance(connection.transport, broker_transport.Transport)
        assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        assert (connection.hostname, connection.port) == ("redis.example", 6380)
        assert connection.transport.Channel.connection_class_ssl is redis.SSLConnection
    finally:
        connection.release()
        app.close()
