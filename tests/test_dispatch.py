"""Group commit in the Dispatcher: submissions waiting together go out together, and
every caller hears its own outcome. The messages and the records are stand-ins that
note what they were given; the broker is a real Redis. The real publish path is in
test_publisher and, end to end, in the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from api_service.broker_transport import BrokerCommand
from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable
from api_service.submissions import Submission
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import SEND_EMAIL
from tests.procs import RedisServer

pytestmark = pytest.mark.integration

EMAIL = SendEmailRequest.model_validate({"to": "a@example.com", "subject": "s", "body": "b"})
DB = 11
QUEUE = "dispatch-test"
T = TypeVar("T")


class Messages:
    """Each submission's message is its task id, pushed to QUEUE."""

    def __init__(self, failures_to_open: int = 0) -> None:
        self._opened = False
        self._failures_to_open = failures_to_open

    @property
    def is_open(self) -> bool:
        return self._opened

    def open(self) -> None:
        if self._failures_to_open:
            self._failures_to_open -= 1
            raise ConnectionError("redis is not there yet")
        self._opened = True

    def commands_for(self, submission: Submission) -> list[BrokerCommand]:
        return [("lpush", (QUEUE, submission.task_id))]


class Records:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.forgotten: list[str] = []
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self._fail = fail

    async def record(self, batch: Sequence[Submission]) -> None:
        self.entered.set()
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 10)
        self.batches.append([submission.task_id for submission in batch])
        if self._fail is not None:
            raise self._fail

    async def forget(self, task_ids: Sequence[str]) -> None:
        self.forgotten += task_ids


def _queued(redis_server: RedisServer) -> list[str]:
    client = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    try:
        return [str(item) for item in reversed(client.lrange(QUEUE, 0, -1))]
    finally:
        client.flushdb()  # the queue and the "queued once" markers (publish_once)
        client.close()


def _run(
    redis_server: RedisServer,
    scenario: Callable[[Dispatcher], Awaitable[T]],
    records: Records,
    messages: Messages | None = None,
    slot_timeout: float = 10,
) -> T:
    async def main() -> T:
        broker = aioredis.Redis(port=redis_server.port, db=DB, socket_timeout=5)
        dispatcher = Dispatcher(messages or Messages(), records, broker, slot_timeout)
        try:
            return await scenario(dispatcher)
        finally:
            await dispatcher.close()
            await broker.aclose()

    return asyncio.run(main())


async def _submit_all(dispatcher: Dispatcher, ids: list[str]) -> list[BaseException | None]:
    return await asyncio.gather(
        *(dispatcher.submit(SEND_EMAIL, EMAIL, task_id, "owner") for task_id in ids),
        return_exceptions=True,
    )


def test_submissions_waiting_together_are_written_in_one_batch(
    redis_server: RedisServer,
) -> None:
    records = Records()

    async def scenario(dispatcher: Dispatcher) -> list[BaseException | None]:
        records.gate = asyncio.Event()
        first = asyncio.ensure_future(dispatcher.submit(SEND_EMAIL, EMAIL, "first", "owner"))
        # The writer takes "first" and waits at the gate; the rest queue up.
        await asyncio.wait_for(records.entered.wait(), 10)
        rest = asyncio.ensure_future(_submit_all(dispatcher, [f"id-{n}" for n in range(40)]))
        for _ in range(1000):  # a few loop turns, until every submit() has queued its own
            if len(dispatcher._waiting) == 40:
                break
            await asyncio.sleep(0)
        assert len(dispatcher._waiting) == 40
        records.gate.set()
        await first  # raises if "first" failed
        return await rest

    outcomes = _run(redis_server, scenario, records)
    assert outcomes == [None] * 40
    # Taken in arrival order, as many as were waiting, at most 16 to a batch.
    assert records.batches == [
        ["first"],
        [f"id-{n}" for n in range(16)],
        [f"id-{n}" for n in range(16, 32)],
        [f"id-{n}" for n in range(32, 40)],
    ]
    assert _queued(redis_server) == ["first", *(f"id-{n}" for n in range(40))]


def test_a_batch_not_recorded_fails_each_of_its_callers_with_503(
    redis_server: RedisServer,
) -> None:
    records = Records(fail=BackendUnavailable("redis went away"))

    async def scenario(dispatcher: Dispatcher) -> list[BaseException | None]:
        return await _submit_all(dispatcher, [f"id-{n}" for n in range(5)])

    outcomes = _run(redis_server, scenario, records)
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes), outcomes
    # Each caller gets its own error, naming its own submission.
    assert [str(outcome).split(":")[0] for outcome in outcomes] == [
        f"could not queue id-{n}" for n in range(5)
    ]
    assert _queued(redis_server) == []


def test_a_batch_the_broker_did_not_take_is_unrecorded_and_fails_with_503(
    redis_server: RedisServer,
) -> None:
    records = Records()

    async def scenario(dispatcher: Dispatcher) -> list[BaseException | None]:
        return await _submit_all(dispatcher, ["id-0", "id-1"])

    # Redis refuses the write: LPUSH onto a key that holds a string.
    client = redis.Redis(port=redis_server.port, db=DB)
    client.set(QUEUE, "not a list")

    outcomes = _run(redis_server, scenario, records)
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes), outcomes
    assert "could not publish" in str(outcomes[0])
    # Recorded first, then removed: the status API must not report them PENDING.
    assert records.forgotten == ["id-0", "id-1"]
    client.flushdb()
    client.close()


def test_a_bug_in_publishing_is_not_reported_as_try_again_later(
    redis_server: RedisServer,
) -> None:
    records = Records(fail=TypeError("a bug"))

    async def scenario(dispatcher: Dispatcher) -> list[BaseException | None]:
        return await _submit_all(dispatcher, ["id-0"])

    outcomes = _run(redis_server, scenario, records)
    assert isinstance(outcomes[0], RuntimeError), outcomes  # a 500, not a 503


def test_a_submission_not_taken_in_time_is_withdrawn_and_never_written(
    redis_server: RedisServer,
) -> None:
    records = Records()

    async def scenario(dispatcher: Dispatcher) -> None:
        records.gate = asyncio.Event()
        held = asyncio.ensure_future(dispatcher.submit(SEND_EMAIL, EMAIL, "held", "owner"))
        # "held" is taken; the writer waits at the gate.
        await asyncio.wait_for(records.entered.wait(), 10)
        with pytest.raises(BackendUnavailable, match="no publish slot for queued"):
            await dispatcher.submit(SEND_EMAIL, EMAIL, "queued", "owner")
        records.gate.set()
        # A taken submission is never withdrawn: "held" waited past slot_timeout and
        # still hears that it was published (this raises if not).
        await held

    _run(redis_server, scenario, records, slot_timeout=0.3)
    assert records.batches == [["held"]]
    assert _queued(redis_server) == ["held"]


def test_the_broker_channel_is_opened_again_when_it_could_not_be_at_first(
    redis_server: RedisServer,
) -> None:
    records = Records()

    async def scenario(dispatcher: Dispatcher) -> None:
        with pytest.raises(BackendUnavailable, match="could not reach the broker"):
            await dispatcher.submit(SEND_EMAIL, EMAIL, "too-early", "owner")
        await dispatcher.submit(SEND_EMAIL, EMAIL, "later", "owner")

    _run(redis_server, scenario, records, messages=Messages(failures_to_open=1))
    assert _queued(redis_server) == ["later"]
