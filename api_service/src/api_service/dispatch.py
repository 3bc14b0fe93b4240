"""Hand submissions from the event loop to the publish threads, and their outcome back.

Group commit: each publish thread takes every submission waiting (up to ``max_batch``)
and records and publishes them together (api_service.publisher), so a busy API pays two
Redis round trips and two thread hand-offs per batch, not per submission. Measured on
the enqueue benchmark, those round trips and hand-offs, made per submission, cost more
CPU than the submissions' own work: every blocking call releases the GIL and takes it
back against the event loop. An idle API sends a lone submission at once: a thread
waits for the first and does not linger for more.

Why 16 at most: a batch's callers resume together and their next requests arrive
together, so the event loop works through them in one burst. Measured at 64
connections, batches of up to 64 put /healthz's p99 at 28 ms, up to 16 at 12-15 ms, for
7 % fewer submissions a second (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from api_service.errors import BackendUnavailable
from api_service.submissions import Submission
from shared_schemas.tasks import TASKS

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, batch: Sequence[Submission]) -> None:
        """Record and send every submission of ``batch``; raise if that failed."""


@dataclass(eq=False, slots=True)
class _Waiting:
    """A submission on its way, and the future its caller awaits."""

    submission: Submission
    done: asyncio.Future[None]
    # Under Dispatcher._claims: a publish thread claimed it, or its caller withdrew it.
    claimed: bool = False
    withdrawn: bool = False


class Dispatcher:
    """Records each submission and sends its task, off the event loop, in batches.

    One thread per publisher, each calling only its own. The caller closes the
    publishers after ``close()``.
    """

    def __init__(
        self, publishers: Sequence[Publisher], slot_timeout: float, max_batch: int = 16
    ) -> None:
        self._slot_timeout = slot_timeout
        self._max_batch = max_batch
        self._waiting: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._claims = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._publish_forever,
                args=(publisher,),
                name=f"publish-{number}",
                daemon=True,
            )
            for number, publisher in enumerate(publishers)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(self, task_name: str, payload: BaseModel, task_id: str, owner: str) -> None:
        """Return once the submission is recorded and the broker holds its message.

        BackendUnavailable if either cannot be done; then nothing is left behind.
        """
        contract = TASKS.get(task_name)
        if contract is None:
            raise ValueError(f"{task_name!r} is not a task of shared_schemas")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(
            Submission(task_name, contract.kwargs(payload), task_id, owner), loop.create_future()
        )
        self._waiting.put(waiting)
        # A submission no thread has claimed after slot_timeout is withdrawn: with Redis
        # frozen each thread is held for up to REDIS_TIMEOUT, and callers queued behind
        # must not wait out one another's. A claimed one is never withdrawn: its publish
        # could still land, and the caller must hear how it ended.
        timer = loop.call_later(self._slot_timeout, self._withdraw, waiting, "in time")
        try:
            await waiting.done
        except asyncio.CancelledError:
            self._withdraw(waiting, "before the caller left")
            raise
        finally:
            timer.cancel()

    def _withdraw(self, waiting: _Waiting, why: str) -> None:
        with self._claims:
            if waiting.claimed:
                return
            waiting.withdrawn = True
        if not waiting.done.done():
            waiting.done.set_exception(
                BackendUnavailable(f"no publish slot for {waiting.submission.task_id} {why}")
            )

    def _publish_forever(self, publisher: Publisher) -> None:
        while True:
            batch, stop = self._take_batch()
            with self._claims:
                claimed = [waiting for waiting in batch if not waiting.withdrawn]
                for waiting in claimed:
                    waiting.claimed = True
            if claimed:
                self._publish_claimed(publisher, claimed)
            if stop:
                return

    def _take_batch(self) -> tuple[list[_Waiting], bool]:
        """Wait for one submission, then take every other one already waiting."""
        first = self._waiting.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                waiting = self._waiting.get_nowait()
            except queue.Empty:
                break
            if waiting is None:
                return batch, True
            batch.append(waiting)
        return batch, False

    def _publish_claimed(self, publisher: Publisher, claimed: list[_Waiting]) -> None:
        error: Exception | None = None
        try:
            publisher.publish([waiting.submission for waiting in claimed])
        except BackendUnavailable as exc:
            error = exc  # each caller's 503 is logged by its error handler
        except Exception as exc:
            error = exc
            log.exception("publishing %d submissions failed", len(claimed))
        # One wake-up of the event loop per batch, not per submission.
        loops = {waiting.done.get_loop() for waiting in claimed}
        for loop in loops:
            mine = [waiting for waiting in claimed if waiting.done.get_loop() is loop]
            # RuntimeError: that loop has closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, mine, error)

    @property
    def running(self) -> bool:
        """Whether every publish thread is alive; without them nothing gets queued."""
        return all(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        """Stop the publish threads once they have published what is waiting."""
        for _ in self._threads:
            self._waiting.put(None)
        for thread in self._threads:
            thread.join()


def _settle(claimed: list[_Waiting], error: Exception | None) -> None:
    for waiting in claimed:
        if waiting.done.done():  # its caller was cancelled meanwhile
            continue
        if error is None:
            waiting.done.set_result(None)
        elif isinstance(error, BackendUnavailable):
            task_id = waiting.submission.task_id
            waiting.done.set_exception(BackendUnavailable(f"could not queue {task_id}: {error}"))
        else:  # a bug, logged above: the caller gets a 500, not a 503 "try again"
            waiting.done.set_exception(RuntimeError(f"publishing failed: {error!r}"))
