"""Record each submission and queue its task, several submissions per Redis round trip.

Group commit on the event loop. ``submit`` waits; one writer task takes every
submission waiting (up to ``max_batch``), builds their messages (Celery's ``send_task``
for the first, by name and with no I/O, api_service.publisher; copies of it for the
others, api_service.message_copies), records them all in one round trip and queues all
their messages in a second, each at most once (api_service.publish_once), so a batch
whose connection dropped can be sent again. Submissions arriving meanwhile
go in the next batch, so a busy API pays two round trips per batch, not per submission,
and an idle one sends a lone submission at once.

No thread: an earlier design published from threads, and measured under the enqueue
load each submission cost a publish thread ~195 µs against ~120 µs for the same work
alone, waiting for the GIL and waking up (docs/design.md, "Publishing on the event loop").

Why 16 at most: a batch's callers resume together and their next requests arrive
together, so the event loop works through them in one burst. Measured at 64
connections, batches of up to 64 put /healthz's p99 at 28 ms, up to 16 at 12-15 ms.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from api_service import due_index
from api_service.broker_transport import BrokerCommand
from api_service.errors import BackendUnavailable, OutcomeUnknown
from api_service.message_copies import copies
from api_service.publish_once import PublishOnce
from api_service.submissions import Submission, labels_of
from shared_schemas.tasks import TASKS

log = logging.getLogger(__name__)


class Messages(Protocol):
    """Builds task messages (api_service.publisher.TaskMessages)."""

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None:
        """Blocking: connect what ``commands_for`` needs."""

    def commands_for(self, submission: Submission) -> list[BrokerCommand]:
        """The Redis commands that queue the submission's task; no I/O."""


class Recorder(Protocol):
    """Writes submission records (api_service.submissions.SubmissionRecorder)."""

    async def record(self, batch: Sequence[Submission]) -> None: ...

    async def forget(self, task_ids: Sequence[str]) -> None: ...


@dataclass(eq=False, slots=True)
class _Waiting:
    """A submission on its way, its broker commands (built once it is taken), and the
    future its caller awaits."""

    submission: Submission
    commands: list[BrokerCommand]
    known_for: int | None  # see Dispatcher.submit
    done: asyncio.Future[None]
    taken: bool = False  # in a batch on its way to Redis: its caller hears how it ended


class Dispatcher:
    def __init__(
        self,
        messages: Messages,
        recorder: Recorder,
        broker: aioredis.Redis,
        slot_timeout: float,
        max_batch: int = 16,
        # Seconds a task's "queued" marker is kept (publish_once): a batch is sent again
        # within seconds, and at thousands of submissions a second each second of it
        # costs thousands of small keys.
        marker_ttl: int = 60,
    ) -> None:
        self._messages = messages
        self._recorder = recorder
        self._publish = PublishOnce(broker)
        self._marker_ttl = marker_ttl
        self._slot_timeout = slot_timeout
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Make the broker channel (kombu pings Redis once), off the event loop.

        BackendUnavailable if Redis does not answer; ``submit`` tries again.
        """
        async with self._opening:
            if self._messages.is_open:
                return
            try:
                await asyncio.wait_for(asyncio.to_thread(self._messages.open), self._slot_timeout)
            except Exception as exc:
                raise BackendUnavailable(f"could not reach the broker: {exc!r}") from exc

    async def submit(
        self,
        task_name: str,
        payload: BaseModel,
        task_id: str,
        owner: str,
        *,
        known_for: int | None = None,
        template: BaseModel | None = None,
    ) -> None:
        """Return once the submission is recorded and the broker holds its message.

        Queues the task at most once, however often its id is submitted while its
        marker lives: ``known_for`` seconds if given (a submission with an
        Idempotency-Key, for as long as its key), else a minute. Its record stays too.

        BackendUnavailable if it cannot be done: nothing was queued. OutcomeUnknown if
        Redis stopped answering while the message was being written: it may have been
        queued, and submitting the same id again (``known_for``) settles it. A
        submission without ``known_for`` has its record removed in either case.
        ``template``: the template the payload was rendered from, for its record.
        """
        contract = TASKS.get(task_name)
        if contract is None:
            raise ValueError(f"{task_name!r} is not a task of shared_schemas")
        if not self._messages.is_open:
            await self.open()
        submission = _submission(task_name, payload, task_id, owner, template)
        loop = asyncio.get_running_loop()
        # Its message is built by the writer, with the rest of its batch (_commands_for).
        waiting = _Waiting(submission, [], known_for, loop.create_future())
        self._waiting.append(waiting)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_while_waiting())
        # One not taken after slot_timeout is withdrawn: with Redis frozen each batch
        # waits up to REDIS_TIMEOUT per round trip, and callers queued behind must not
        # wait out one another's. A taken one is never withdrawn: its write could still
        # land, and the caller must hear how it ended.
        timer = loop.call_later(self._slot_timeout, self._withdraw, waiting, "in time")
        try:
            await waiting.done
        except asyncio.CancelledError:
            self._withdraw(waiting, "before the caller left")
            raise
        finally:
            timer.cancel()

    async def submit_all(
        self,
        task_name: str,
        tasks: Sequence[tuple[BaseModel, str]],
        owner: str,
        *,
        known_for: int | None = None,
        templates: Sequence[BaseModel | None] = (),
    ) -> None:
        """Submit each ``(payload, task_id)`` as one group: all recorded in one round
        trip, then all queued in a second, each step one script, so all or none.

        Errors as ``submit``'s: after BackendUnavailable none was queued; after
        OutcomeUnknown all or none were, and submitting the group again with
        ``known_for`` queues each task once either way.

        Written beside the group-commit writer, not through it: the group is already
        one write, and taking it whole would hold the writer's next batch behind it.
        """
        contract = TASKS.get(task_name)
        if contract is None:
            raise ValueError(f"{task_name!r} is not a task of shared_schemas")
        if not tasks:
            return
        if not self._messages.is_open:
            await self.open()
        used = list(templates) or [None] * len(tasks)
        submissions = [
            _submission(task_name, payload, task_id, owner, template)
            for (payload, task_id), template in zip(tasks, used, strict=True)
        ]
        loop = asyncio.get_running_loop()
        group = [
            _Waiting(submission, commands, known_for, loop.create_future(), True)
            for submission, commands in zip(
                submissions, self._commands_for(submissions), strict=True
            )
        ]
        # Shielded: a write begun runs to its end (records without messages would read
        # PENDING until they expire), even if the caller leaves meanwhile.
        await asyncio.shield(self._write(group))
        errors = [waiting.done.exception() for waiting in group]
        error = next((exc for exc in errors if exc is not None), None)
        if error is not None:
            raise error

    async def publish(self, task_name: str, payload: BaseModel, task_id: str) -> None:
        """Queue a task that has no record and whose caller waits for no outcome (a
        webhook event the API announces), once per ``task_id`` (publish_once).

        BackendUnavailable if Redis did not take it."""
        if not self._messages.is_open:
            await self.open()
        contract = TASKS[task_name]
        submission = Submission(task_name, contract.kwargs(payload), task_id, owner="")
        commands = self._messages.commands_for(submission)
        try:
            await self._publish([(task_id, self._marker_ttl, commands)])
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not publish {task_name}: {exc!r}") from exc

    def _withdraw(self, waiting: _Waiting, why: str) -> None:
        if waiting.taken:
            return
        if waiting in self._waiting:
            self._waiting.remove(waiting)
        if not waiting.done.done():
            waiting.done.set_exception(
                BackendUnavailable(f"no publish slot for {waiting.submission.task_id} {why}")
            )

    async def _write_while_waiting(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                for waiting in batch:
                    waiting.taken = True
                built = self._commands_for([waiting.submission for waiting in batch])
                for waiting, commands in zip(batch, built, strict=True):
                    waiting.commands = commands
                await self._write(batch)
        except asyncio.CancelledError:  # shutting down: nobody may hang
            _settle(batch + self._waiting, BackendUnavailable("the API is shutting down"))
            self._waiting.clear()
            raise
        except Exception as exc:  # a bug: the callers get a 500, not a 503 "try again"
            log.exception("publishing %d submissions failed", len(batch))
            _settle(batch + self._waiting, RuntimeError(f"publishing failed: {exc!r}"))
            self._waiting.clear()
        finally:
            self._writer = None

    def _commands_for(self, submissions: Sequence[Submission]) -> list[list[BrokerCommand]]:
        """Each submission's commands. Celery builds the first message of each task name;
        the others are copies of it, ~10 times cheaper (api_service.message_copies),
        unless it cannot be copied (docs/design.md, "Shortcuts kept, and what each saves")."""
        built: list[list[BrokerCommand]] = [[] for _ in submissions]
        by_name: dict[str, list[int]] = {}
        for index, submission in enumerate(submissions):
            by_name.setdefault(submission.task_name, []).append(index)
        for first, *rest in by_name.values():
            commands = self._messages.commands_for(submissions[first])
            others = [submissions[index] for index in rest]
            copied = copies(submissions[first], commands, others) if others else []
            if copied is None:
                copied = [self._messages.commands_for(submission) for submission in others]
            for index, made in zip((first, *rest), (commands, *copied), strict=True):
                built[index] = _scheduled(submissions[index], made)
        return built

    async def _write(self, batch: Sequence[_Waiting]) -> None:
        submissions = [waiting.submission for waiting in batch]
        error: Exception | None = None
        try:
            # Record first: a fast worker may finish before the publish returns, and
            # the status endpoint must already know the id.
            await self._recorder.record(submissions)
            try:
                await self._queue(batch)
            except (RedisError, OSError) as exc:
                # Kept for a replay that may come (known_for): it records them again,
                # and a replay running beside this batch must not lose its record.
                await self._recorder.forget(
                    [w.submission.task_id for w in batch if w.known_for is None]
                )
                raise OutcomeUnknown(f"could not publish: {exc!r}") from exc
        except BackendUnavailable as exc:
            error = exc  # each caller's 503 is logged by its error handler
        _settle(batch, error)

    async def _queue(self, batch: Sequence[_Waiting]) -> None:
        messages = [
            (w.submission.task_id, w.known_for or self._marker_ttl, w.commands) for w in batch
        ]
        try:
            await self._publish(messages)
        except RedisConnectionError:
            # The connection dropped: Redis may or may not have run the batch. Sent
            # again on a fresh connection, each message is still queued once
            # (publish_once), and the callers hear how it ended. Not on a timeout: a
            # frozen Redis would only be waited out again.
            await self._publish(messages)

    async def was_queued(self, task_id: str) -> bool:
        """Whether the task was queued, while its marker lives (see ``submit``)."""
        try:
            return await self._publish.was_queued(task_id)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"could not ask the broker: {exc!r}") from exc

    async def close(self) -> None:
        """Finish writing what is waiting."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait([writer])


def _submission(
    task_name: str, payload: BaseModel, task_id: str, owner: str, template: BaseModel | None
) -> Submission:
    contract = TASKS[task_name]
    # A payload with a future send_at goes into the due-time index (due_index).
    send_at: datetime | None = getattr(payload, "send_at", None)
    # A mail's attachments come back as bytes to store beside its message, which
    # carries a reference (shared_schemas.stored_content); the recorder stores them.
    kwargs, stored = contract.message(payload, task_id)
    return Submission(
        task_name,
        kwargs,
        task_id,
        owner,
        *labels_of(payload),
        send_at=send_at,
        scheduled=due_index.is_later(send_at),
        template=template.model_dump_json() if template is not None else "",
        stored=stored,
    )


def _scheduled(submission: Submission, commands: list[BrokerCommand]) -> list[BrokerCommand]:
    """The commands that queue it, or, for a later send_at, that enter it in the index."""
    send_at = submission.send_at
    if send_at is None or not submission.scheduled:
        return commands
    return due_index.scheduled_commands(submission.task_id, send_at, commands)


def _settle(batch: Sequence[_Waiting], error: Exception | None) -> None:
    for waiting in batch:
        if waiting.done.done():  # withdrawn meanwhile
            continue
        if error is None:
            waiting.done.set_result(None)
        elif isinstance(error, BackendUnavailable):
            task_id = waiting.submission.task_id
            waiting.done.set_exception(type(error)(f"could not queue {task_id}: {error}"))
        else:
            waiting.done.set_exception(error)
