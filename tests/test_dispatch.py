"""Group commit in the Dispatcher: submissions waiting together go out together, and
every caller hears its own outcome. The publisher here is a stand-in that records what
it was given; the real one is exercised end to end by the integration tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import httpx
import pytest

from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable
from api_service.submissions import Submission
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import SEND_EMAIL

EMAIL = SendEmailRequest.model_validate({"to": "a@example.com", "subject": "s", "body": "b"})


class RecordingPublisher:
    def __init__(self, gate: threading.Event | None = None, fail: Exception | None = None):
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self._gate = gate
        self._fail = fail

    def publish(self, batch: Sequence[Submission]) -> None:
        self.entered.set()
        if self._gate is not None:
            assert self._gate.wait(10), "the test never opened the gate"
        self.batches.append([submission.task_id for submission in batch])
        if self._fail is not None:
            raise self._fail


async def _submit_all(dispatcher: Dispatcher, ids: list[str]) -> list[BaseException | None]:
    return await asyncio.gather(
        *(dispatcher.submit(SEND_EMAIL, EMAIL, task_id, "owner") for task_id in ids),
        return_exceptions=True,
    )


def test_submissions_waiting_together_are_published_in_one_batch() -> None:
    gate = threading.Event()
    publisher = RecordingPublisher(gate)
    dispatcher = Dispatcher([publisher], slot_timeout=10)

    async def scenario() -> list[BaseException | None]:
        first = asyncio.ensure_future(dispatcher.submit(SEND_EMAIL, EMAIL, "first", "owner"))
        # The publish thread takes "first" and waits at the gate; the rest queue up.
        assert await asyncio.to_thread(publisher.entered.wait, 10)
        rest = asyncio.ensure_future(_submit_all(dispatcher, [f"id-{n}" for n in range(40)]))
        for _ in range(1000):  # a few loop turns, until every submit() has queued its own
            if dispatcher._waiting.qsize() == 40:
                break
            await asyncio.sleep(0)
        assert dispatcher._waiting.qsize() == 40
        gate.set()
        await first  # raises if "first" failed
        return await rest

    try:
        outcomes = asyncio.run(scenario())
    finally:
        dispatcher.close()
    assert outcomes == [None] * 40
    published = [task_id for batch in publisher.batches for task_id in batch]
    assert sorted(published) == sorted(["first", *(f"id-{n}" for n in range(40))])
    # Taken in arrival order, as many as were waiting, at most 16 to a batch.
    assert publisher.batches == [
        ["first"],
        [f"id-{n}" for n in range(16)],
        [f"id-{n}" for n in range(16, 32)],
        [f"id-{n}" for n in range(32, 40)],
    ]


def test_a_failed_batch_fails_each_of_its_callers_with_503() -> None:
    publisher = RecordingPublisher(fail=BackendUnavailable("redis went away"))
    dispatcher = Dispatcher([publisher], slot_timeout=10)
    try:
        outcomes = asyncio.run(_submit_all(dispatcher, [f"id-{n}" for n in range(5)]))
    finally:
        dispatcher.close()
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes), outcomes
    # Each caller gets its own error, naming its own submission.
    assert [str(outcome).split(":")[0] for outcome in outcomes] == [
        f"could not queue id-{n}" for n in range(5)
    ]


def test_a_bug_in_publishing_is_not_reported_as_try_again_later() -> None:
    publisher = RecordingPublisher(fail=TypeError("a bug"))
    dispatcher = Dispatcher([publisher], slot_timeout=10)
    try:
        outcomes = asyncio.run(_submit_all(dispatcher, ["id-0"]))
    finally:
        dispatcher.close()
    assert isinstance(outcomes[0], RuntimeError), outcomes


def test_a_submission_no_thread_claims_in_time_is_withdrawn_and_never_published() -> None:
    gate = threading.Event()
    publisher = RecordingPublisher(gate)
    dispatcher = Dispatcher([publisher], slot_timeout=0.3)

    async def scenario() -> None:
        held = asyncio.ensure_future(dispatcher.submit(SEND_EMAIL, EMAIL, "held", "owner"))
        # "held" is claimed; the only publish thread waits at the gate.
        assert await asyncio.to_thread(publisher.entered.wait, 10)
        with pytest.raises(BackendUnavailable, match="no publish slot for queued"):
            await dispatcher.submit(SEND_EMAIL, EMAIL, "queued", "owner")
        gate.set()
        # A claimed submission is never withdrawn: "held" waited past slot_timeout and
        # still hears that it was published (this raises if not).
        await held

    try:
        asyncio.run(scenario())
    finally:
        dispatcher.close()
    assert publisher.batches == [["held"]]


def test_healthz_fails_once_the_publish_threads_have_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without its publish threads the API can queue nothing: liveness must say so, so
    the orchestrator restarts it, rather than every submission timing out into a 503."""
    monkeypatch.setenv("API_KEYS", "k")  # api_service.main reads its settings on import
    from api_service.main import create_app
    from api_service.settings import ApiSettings

    app = create_app(ApiSettings(api_keys="k"))
    app.state.dispatcher = Dispatcher([RecordingPublisher()], slot_timeout=10)

    async def probe() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            running = await client.get("/healthz")
            app.state.dispatcher.close()
            return [running, await client.get("/healthz")]

    running, stopped = asyncio.run(probe())
    assert (running.status_code, running.json()) == (200, {"status": "ok"})
    assert stopped.status_code == 503
    assert stopped.json() == {"status": "publish threads stopped"}
