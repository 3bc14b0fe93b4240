"""Scheduled sending: the due-time index both services keep in the broker's database.

A submission with a future ``send_at`` is not pushed onto its queue. The API's publish
script (api_service.publish_once) adds the task id to a sorted set scored by its due
time (epoch milliseconds) and keeps the prepared broker message in a hash beside it.
Every worker node runs a promoter (worker_service.due_index) whose one Lua script, on
Redis's clock, moves each due entry onto its queue list, rings the queue's doorbell
(shared_schemas.broker) and removes the entry, all in one atomic step: with any number
of nodes, each entry is promoted once, and with its state in Redis it survives their
restarts (docs/design.md, "Scheduling and cancel").

Not Celery's ETA: on Redis an ETA message is held unacknowledged by the worker that
fetched it, and one held past the visibility timeout is delivered again (kombu#337).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

# Sorted set: task id, scored by its due time in epoch milliseconds.
DUE_KEY = "email-dispatch:due"
# Hash: task id -> the entry (``entry``): the queue list and the prepared message.
DUE_MESSAGES_KEY = "email-dispatch:due-messages"

# How far ahead send_at may be.
MAX_AHEAD = timedelta(days=30)


def due_score(send_at: datetime) -> int:
    """The index's score of ``send_at``: epoch milliseconds."""
    return int(send_at.timestamp() * 1000)


def entry(list_key: str, message: str) -> str:
    """What the index keeps of a message: the list it goes to and the message itself,
    as a JSON array (the promoter decodes it with cjson)."""
    return json.dumps([list_key, message])
