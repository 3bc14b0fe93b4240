"""The API's publish path against a real Redis: Celery's send_task builds each message,
kombu's Redis channel turns it into the commands that queue it without sending them
(api_service.broker_transport), and the dispatcher records a batch, then writes it."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import ValidationError

from api_service import broker_transport, publish_once
from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable
from api_service.publish_once import PublishOnce, marker_key
from api_service.publisher import TaskMessages, make_producer_app
from api_service.redis_clients import connect_async
from api_service.settings import ApiSettings
from api_service.submissions import Submission, SubmissionRecorder
from devtools.procs import free_port
from shared_schemas import records
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL, TASKS
from tests.broker_tls import assert_rediss_keeps_verified_tls
from tests.lossy_proxy import lossy_proxy
from tests.procs import RedisServer

pytestmark = pytest.mark.integration

DB = 9
EMAIL = SendEmailRequest.model_validate({"to": "a@example.com", "subject": "s", "body": "b"})


def _settings(url: str, monkeypatch: pytest.MonkeyPatch) -> ApiSettings:
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    return ApiSettings(api_keys="k", celery_broker_url=url)


def _submission() -> Submission:
    return Submission(SEND_EMAIL, TASKS[SEND_EMAIL].kwargs(EMAIL), str(uuid.uuid4()), "owner-1")


def test_send_task_gives_kombus_commands_for_the_message_and_sends_nothing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_producer_app(_settings(redis_server.url(DB), monkeypatch))
    messages = TaskMessages(app)
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    try:
        messages.open()
        store.config_resetstat()
        submission = _submission()
        commands = messages.commands_for(submission)
        # Nothing reached Redis: building a message costs the event loop no I/O.
        assert "cmdstat_lpush" not in store.info("commandstats")
        assert store.llen(EMAIL_QUEUE) == 0
        [(name, (queue, raw))] = commands
        assert (name, queue) == ("lpush", EMAIL_QUEUE)
        message = json.loads(raw)
        assert message["headers"]["id"] == submission.task_id
        assert message["headers"]["task"] == SEND_EMAIL
        # Flower and `celery inspect` see the shape of the arguments, not the mail.
        assert message["headers"]["kwargsrepr"] == "{'email': '<QueuedEmail>'}"
        assert message["properties"]["delivery_info"]["routing_key"] == EMAIL_QUEUE
        # A publish outside a batch would block the event loop: the channel refuses it.
        with pytest.raises(RuntimeError, match="TaskMessages"):
            app.send_task(SEND_EMAIL, kwargs={}, producer=messages._producer, declare=[])
        assert store.llen(EMAIL_QUEUE) == 0
    finally:
        store.flushdb()
        messages.close()
        app.close()


def test_other_broker_schemes_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"must be a redis:// or rediss:// URL"):
        _settings("sentinel://127.0.0.1:26379", monkeypatch)


def test_rediss_urls_keep_verified_tls_through_the_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_producer_app(_settings("rediss://:secret@redis.example:6380/0", monkeypatch))
    connection = app.connection_for_write()
    try:
        assert_rediss_keeps_verified_tls(connection, broker_transport.Transport)
    finally:
        connection.release()
        app.close()


def _publish(
    messages: TaskMessages, results_url: str, broker_url: str, count: int
) -> list[BaseException | None]:
    async def main() -> list[BaseException | None]:
        results = aioredis.Redis.from_url(results_url, decode_responses=True)
        broker = aioredis.Redis.from_url(broker_url, decode_responses=True, socket_timeout=1)
        dispatcher = Dispatcher(messages, SubmissionRecorder(results, 600), broker, 5)
        try:
            return await asyncio.gather(
                *(
                    dispatcher.submit(SEND_EMAIL, EMAIL, f"task-{n}", "owner-1")
                    for n in range(count)
                ),
                return_exceptions=True,
            )
        finally:
            await dispatcher.close()
            await results.aclose()
            await broker.aclose()

    return asyncio.run(main())


def test_a_batch_is_recorded_then_queued_as_send_task_messages(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url(DB)
    app = make_producer_app(_settings(url, monkeypatch))
    messages = TaskMessages(app)
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    try:
        messages.open()
        assert _publish(messages, url, url, 20) == [None] * 20
        queued = [json.loads(raw) for raw in reversed(store.lrange(EMAIL_QUEUE, 0, -1))]
        assert [message["headers"]["id"] for message in queued] == [f"task-{n}" for n in range(20)]
        for n in range(20):
            record = store.hgetall(records.record_key(f"task-{n}"))
            assert record[records.TASK] == SEND_EMAIL
            assert record[records.OWNER] == "owner-1"
            assert 0 < store.ttl(records.record_key(f"task-{n}")) <= 600
    finally:
        store.flushdb()
        messages.close()
        app.close()


def test_a_batch_the_broker_did_not_take_leaves_no_records(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url(DB)
    app = make_producer_app(_settings(url, monkeypatch))
    messages = TaskMessages(app)
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    try:
        messages.open()
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        outcomes = _publish(messages, url, nowhere, 5)
        assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes), outcomes
        assert "could not publish" in str(outcomes[0])
        # Recorded first, then removed: the status API must not report them PENDING.
        assert store.exists(*(records.record_key(f"task-{n}") for n in range(5))) == 0
    finally:
        store.flushdb()
        messages.close()
        app.close()


def test_a_publish_whose_reply_is_lost_is_sent_again_and_queued_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the publish but the connection dropped before its reply: the API sends
    it again on a new connection, the message is queued once, and the caller hears 202
    rather than a 503 it could not act on (docs/delivery-guarantees.md)."""
    url = redis_server.url(DB)
    app = make_producer_app(_settings(url, monkeypatch))
    messages = TaskMessages(app)
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)

    async def main(port: int) -> BaseException | None:
        results = connect_async(url, 2, 4)
        broker = connect_async(f"redis://127.0.0.1:{port}/{DB}", 2, 4)
        dispatcher = Dispatcher(messages, SubmissionRecorder(results, 600), broker, 5)
        try:
            [outcome] = await asyncio.gather(
                dispatcher.submit(SEND_EMAIL, EMAIL, "lost-reply", "owner-1"),
                return_exceptions=True,
            )
            return outcome
        finally:
            await dispatcher.close()
            await results.aclose()
            await broker.aclose()

    try:
        messages.open()
        # Loaded first, so the lost publish is run rather than refused with NOSCRIPT.
        store.script_load(publish_once._QUEUE_ONCE)
        with lossy_proxy(redis_server.port) as proxy:
            proxy.lose_publishes(1, redis_runs_them=True)
            outcome = asyncio.run(main(proxy.port))
            assert proxy.publishes_left_to_lose == 0
        assert outcome is None
        queued = [json.loads(raw)["headers"]["id"] for raw in store.lrange(EMAIL_QUEUE, 0, -1)]
        assert queued == ["lost-reply"]
        assert store.hget(records.record_key("lost-reply"), records.OWNER) == "owner-1"
    finally:
        store.flushdb()
        messages.close()
        app.close()


def test_the_same_batch_written_twice_queues_each_message_once(
    redis_server: RedisServer,
) -> None:
    store = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)

    async def main() -> None:
        broker = connect_async(redis_server.url(DB), 2, 2)
        publish = PublishOnce(broker)
        batch = [(f"task-{n}", 60, [("lpush", ("once", f"message-{n}"))]) for n in range(3)]
        try:
            await publish(batch)
            await publish(batch)  # as after a reply lost on the way
            # A replay in the same batch as its first submission: queued once too.
            task_3 = ("task-3", 600, [("lpush", ("once", "message-3"))])
            await publish([*batch, task_3, task_3])
            assert await publish.was_queued("task-3")
            assert not await publish.was_queued("task-4")
        finally:
            await broker.aclose()

    try:
        asyncio.run(main())
        assert list(reversed(store.lrange("once", 0, -1))) == [f"message-{n}" for n in range(4)]
        assert 0 < store.ttl(marker_key("task-0")) <= 60
        assert 60 < store.ttl(marker_key("task-3")) <= 600  # each message's own
    finally:
        store.flushdb()


def test_a_large_group_queues_exactly_what_the_argument_path_does(
    redis_server: RedisServer,
) -> None:
    """A group from publish_once.JSON_FROM on goes as JSON with its long strings raw
    beside it: the same commands must leave the same keys, byte for byte."""
    store = redis.Redis(port=redis_server.port, db=DB)
    count = publish_once.JSON_FROM + 8
    long = '{"body": "é\\u00e9 \\"quoted\\" ' + "x" * publish_once.SPILL_FROM + '"}'

    def group(queue: str) -> list[tuple[str, int, list[tuple[str, tuple[str, ...]]]]]:
        return [
            (
                f"{queue}-{n}",
                60,
                [
                    ("lpush", (queue, f"{long}-{n}")),
                    ("hset", (f"{queue}:h", f"field-{n}", "short ü")),
                ],
            )
            for n in range(count)
        ]

    async def main() -> None:
        broker = connect_async(redis_server.url(DB), 2, 2)
        publish = PublishOnce(broker)
        try:
            await publish(group("large"))  # one group: the JSON path
            for one in group("small"):  # one at a time: the argument path
                await publish([one])
            await publish(group("large"))  # sent again: nothing twice
        finally:
            await broker.aclose()

    try:
        asyncio.run(main())
        assert store.lrange("large", 0, -1) == store.lrange("small", 0, -1)
        assert store.llen("large") == count
        assert store.lindex("large", -1) == f"{long}-0".encode()
        assert store.hgetall("large:h") == store.hgetall("small:h")
    finally:
        store.flushdb()
