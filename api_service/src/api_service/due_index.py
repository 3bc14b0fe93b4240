"""Scheduled submissions: their messages go into the due-time index, not onto a queue.

The message is the one ``send_task`` built for the queue (api_service.publisher); only
where it goes changes. Its ``LPUSH`` becomes a ``ZADD`` of the task id, scored by its due
time, and an ``HSET`` of the message beside it, run by the same publish script, so a
scheduled task is still queued at most once (api_service.publish_once). The worker
nodes' promoter pushes it onto its queue when it is due (shared_schemas.schedule).
"""

from __future__ import annotations

from datetime import UTC, datetime

from api_service.broker_transport import BrokerCommand
from shared_schemas.schedule import DUE_KEY, DUE_MESSAGES_KEY, due_score, entry
from shared_schemas.status import TaskState


def is_later(send_at: datetime | None, now: datetime | None = None) -> bool:
    """Whether a task with this ``send_at`` waits in the index (a past one goes now)."""
    return send_at is not None and send_at > (now or datetime.now(UTC))


def first_state(send_at: datetime | None) -> TaskState:
    """The status a submission with this ``send_at`` starts in."""
    return TaskState.SCHEDULED if is_later(send_at) else TaskState.PENDING


def scheduled_commands(
    task_id: str, send_at: datetime, commands: list[BrokerCommand]
) -> list[BrokerCommand]:
    """``commands`` (kombu's, to queue the task's message) with each push onto a queue
    list replaced by the task's entry in the due-time index."""
    scheduled: list[BrokerCommand] = []
    for name, args in commands:
        if name.lower() != "lpush":
            # kombu's PEXPIRE of a queue with an expiry: as harmless now as with the push.
            scheduled.append((name, args))
            continue
        list_key, message = args
        if isinstance(message, bytes):
            message = message.decode()
        scheduled += [
            ("ZADD", (DUE_KEY, due_score(send_at), task_id)),
            ("HSET", (DUE_MESSAGES_KEY, task_id, entry(str(list_key), str(message)))),
        ]
    return scheduled
