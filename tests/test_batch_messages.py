"""A batch's messages are copies of the first one Celery builds: the same bytes
``send_task`` would write for each (api_service.message_copies)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from api_service.batches import task_ids
from api_service.broker_transport import BrokerCommand
from api_service.dispatch import Dispatcher
from api_service.message_copies import copies
from api_service.publisher import TaskMessages, make_producer_app
from api_service.settings import ApiSettings
from api_service.submissions import Submission, SubmissionRecorder
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import SEND_EMAIL, TASKS
from tests.procs import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def messages(redis_server: RedisServer) -> Iterator[TaskMessages]:
    url = redis_server.url(11)
    settings = ApiSettings(api_keys="k", celery_broker_url=url, celery_result_backend=url)
    app = make_producer_app(settings)
    built = TaskMessages(app)
    built.open()
    yield built
    built.close()
    app.close()


def _submission(i: int, **extra: object) -> Submission:
    email = SendEmailRequest.model_validate(
        {"to": f"u{i}@example.com", "subject": f"Ünïcode {i}", "body": "b" * i, **extra}
    )
    return Submission(SEND_EMAIL, TASKS[SEND_EMAIL].kwargs(email), str(uuid.uuid4()), "o")


def _without_delivery_tag(raw: str) -> tuple[str, str]:
    tag = json.loads(raw)["properties"]["delivery_tag"]
    return raw.replace(tag, "<tag>"), tag


def test_a_copy_is_the_message_send_task_writes(messages: TaskMessages) -> None:
    first = _submission(0)
    others = [_submission(i, tags=["t"], metadata={"k": "v"}) for i in range(1, 4)]
    copied = copies(first, messages.commands_for(first), others)
    assert copied is not None
    tags = set()
    for submission, commands in zip(others, copied, strict=True):
        ((name, (queue, raw)),) = commands
        ((want_name, (want_queue, want_raw)),) = messages.commands_for(submission)
        assert (name, queue) == (want_name, want_queue) == ("lpush", "email")
        got, tag = _without_delivery_tag(raw)
        assert got == _without_delivery_tag(want_raw)[0]
        tags.add(tag)
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        assert body[1] == submission.kwargs
    assert len(tags) == len(others), "each copy has its own delivery tag"


def test_a_message_of_another_shape_is_not_copied(messages: TaskMessages) -> None:
    first = _submission(0)
    commands = messages.commands_for(first)
    ((name, (queue, raw)),) = commands
    assert copies(first, [*commands, ("pexpire", (queue, 1000))], [_submission(1)]) is None
    assert copies(_submission(2), commands, [_submission(1)]) is None  # ids do not match
    message = json.loads(raw)
    message["properties"]["body_encoding"] = "utf-8"
    assert copies(first, [(name, (queue, json.dumps(message)))], [_submission(1)]) is None


def test_a_batchs_task_ids_are_distinct_uuids_derived_from_its_id() -> None:
    batch_id = str(uuid.uuid4())
    ids = task_ids(batch_id, 500)
    assert ids == task_ids(batch_id, 500)
    assert len(set(ids)) == 500
    assert batch_id not in ids
    assert all(uuid.UUID(task_id).version == 4 for task_id in ids)
    assert not set(ids) & set(task_ids(str(uuid.uuid4()), 500))


def test_a_message_that_is_not_json_is_not_copied(messages: TaskMessages) -> None:
    first = _submission(0)
    assert copies(first, [("lpush", ("email", first.task_id))], [_submission(1)]) is None
    assert copies(first, [("lpush", ("email", "[1, 2]"))], [_submission(1)]) is None


class _CountingMessages:
    """Celery's messages, noting whose message Celery built."""

    def __init__(self, inner: TaskMessages) -> None:
        self._inner = inner
        self.built_by_celery: list[str] = []

    @property
    def is_open(self) -> bool:
        return True

    def open(self) -> None:
        pass

    def commands_for(self, submission: Submission) -> list[BrokerCommand]:
        self.built_by_celery.append(submission.task_id)
        return self._inner.commands_for(submission)


def test_submissions_written_together_are_copies_of_the_one_message_celery_builds(
    messages: TaskMessages, redis_server: RedisServer
) -> None:
    """The group commit (api_service.dispatch): each batch's first message from
    ``send_task``, the others copied, each the bytes ``send_task`` would write."""
    counting = _CountingMessages(messages)
    emails = {
        str(uuid.uuid4()): SendEmailRequest.model_validate(
            {"to": f"u{i}@example.com", "subject": f"Ünïcode {i}", "body": "b" * i}
        )
        for i in range(6)
    }

    async def main() -> list[str]:
        broker = aioredis.Redis(port=redis_server.port, db=12, decode_responses=True)
        dispatcher = Dispatcher(counting, SubmissionRecorder(broker, 60), broker, 10)
        try:
            await asyncio.gather(
                *(dispatcher.submit(SEND_EMAIL, e, i, "owner") for i, e in emails.items())
            )
            return [str(raw) for raw in await broker.lrange("email", 0, -1)]
        finally:
            await dispatcher.close()
            await broker.flushdb()
            await broker.aclose()

    queued = asyncio.run(main())
    assert counting.built_by_celery == [next(iter(emails))]  # all six in one batch
    assert len(queued) == len(emails)
    for raw in queued:
        task_id = json.loads(raw)["headers"]["id"]
        email = emails.pop(task_id)
        submission = Submission(SEND_EMAIL, TASKS[SEND_EMAIL].kwargs(email), task_id, "owner")
        ((_, (_, want)),) = messages.commands_for(submission)
        assert _without_delivery_tag(raw)[0] == _without_delivery_tag(want)[0]
    assert not emails
