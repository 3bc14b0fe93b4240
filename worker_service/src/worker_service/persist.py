"""Keep trying a Redis write through a restart or an outage, up to a deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.05
LONGEST_DELAY = 1.0


def until(deadline: float, write: Callable[[], T], what: str) -> T:
    """``write()``, again after each Redis or socket error (doubling pauses up to 1 s),
    until it succeeds or the next try would start past ``deadline`` (``time.monotonic``):
    then the last error is raised."""
    delay = FIRST_DELAY
    failures = 0
    while True:
        try:
            return write()
        except (RedisError, OSError) as exc:
            failures += 1
            if failures == 1:
                log.warning("could not %s (%r); trying again until the attempt's limit", what, exc)
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_DELAY)
