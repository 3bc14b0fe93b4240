"""The API's publisher: kombu's Redis transport with one client per channel, and a
batch of submissions recorded and queued together."""

from __future__ import annotations

import json
import ssl
import uuid

import pytest
import redis
from celery import Celery

from api_service import broker_transport
from api_service.errors import BackendUnavailable
from api_service.publisher import BatchPublisher, make_producer_app
from api_service.settings import ApiSettings
from api_service.submissions import Submission, SubmissionRecorder
from devtools.procs import free_port
from shared_schemas import records
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL, TASKS
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


def _batch(count: int) -> list[Submission]:
    email = SendEmailRequest.model_validate({"to": "a@example.com", "subject": "s", "body": "b"})
    kwargs = TASKS[SEND_EMAIL].kwargs(email)
    return [Submission(SEND_EMAIL, kwargs, str(uuid.uuid4()), "owner-1") for _ in range(count)]


def test_a_batch_is_recorded_then_queued_as_send_task_messages(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _publisher(redis_server, monkeypatch)
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    recorder = SubmissionRecorder(store, result_ttl=600)
    publisher = BatchPublisher(app, recorder)
    batch = _batch(20)
    try:
        publisher.publish(batch)
        messages = [json.loads(raw) for raw in reversed(store.lrange(EMAIL_QUEUE, 0, -1))]
        assert [message["headers"]["id"] for message in messages] == [s.task_id for s in batch]
        assert {message["headers"]["task"] for message in messages} == {SEND_EMAIL}
        # Flower and `celery inspect` see the shape of the arguments, not the mail.
        assert {message["headers"]["kwargsrepr"] for message in messages} == {
            "{'email': '<SendEmailRequest>'}"
        }
        for submission in batch:
            record = store.hgetall(records.record_key(submission.task_id))
            assert record[records.TASK] == SEND_EMAIL
            assert record[records.OWNER] == "owner-1"
            assert 0 < store.ttl(records.record_key(submission.task_id)) <= 600
    finally:
        store.flushdb()
        publisher.close()
        app.close()


def test_a_batch_the_broker_did_not_take_leaves_no_records(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    app = make_producer_app(ApiSettings(api_keys="k", celery_broker_url=nowhere, redis_timeout=1))
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    publisher = BatchPublisher(app, SubmissionRecorder(store, result_ttl=600))
    batch = _batch(5)
    try:
        with pytest.raises(BackendUnavailable, match="could not publish"):
            publisher.publish(batch)
        # Recorded first, then removed: the status API must not report them PENDING.
        assert store.exists(*(records.record_key(s.task_id) for s in batch)) == 0
    finally:
        store.flushdb()
        publisher.close()
        app.close()
