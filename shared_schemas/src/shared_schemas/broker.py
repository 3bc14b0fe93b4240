"""Names both services use in the broker's database beyond kombu's own keys.

A queue's *doorbell* is a Redis stream that every publisher appends to when it pushes a
message onto that queue's list. An idle worker waits on its queues' doorbells with
``XREAD BLOCK``, which takes nothing: the message itself is then popped and recorded as
unacked in one Lua script, so there is no moment at which a worker holds a message that
Redis no longer keeps (docs/design.md, "Fetching a message"). A push without a ring (a
publisher that does not know of doorbells, kombu's own restore of unacked messages)
costs latency only: an idle worker looks at its queues at least once a second anyway.
"""

from __future__ import annotations

DOORBELL_PREFIX = "email-dispatch:doorbell:"


def doorbell_key(queue_key: str) -> str:
    """The doorbell of the Redis list ``queue_key`` (a kombu queue's list)."""
    return f"{DOORBELL_PREFIX}{queue_key}"
