"""Tell the API this worker node is alive: a Redis key refreshed on Celery's timer.

The API counts these keys for /readyz and /metrics (shared_schemas.records).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any, ClassVar

from celery import bootsteps
from redis.exceptions import RedisError

from shared_schemas import records

log = logging.getLogger(__name__)


class Presence(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type hints
    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._timer_entry: Any = None

    def start(self, worker: Any) -> None:
        self._beat(worker)
        self._timer_entry = worker.timer.call_repeatedly(
            records.WORKER_HEARTBEAT, self._beat, (worker,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
        with contextlib.suppress(RedisError, OSError):  # else it lapses by itself
            worker.app.backend.client.delete(records.worker_key(worker.hostname))

    def _beat(self, worker: Any) -> None:
        presence = {"hostname": worker.hostname, "pid": os.getpid()}
        presence["seen_at"] = datetime.now(UTC).isoformat()
        try:
            worker.app.backend.client.set(
                records.worker_key(worker.hostname),
                json.dumps(presence),
                ex=records.WORKER_SEEN_TTL,
            )
        except (RedisError, OSError):
            log.warning("could not report presence", exc_info=True)
