"""Read a mail's attachments from where the API stored them, and delete them when its
task has ended (shared_schemas.stored_content; docs/design.md, "Attachments, inline
images and headers").

The key is deleted in the same script that stores the SUCCESS (delivery_ledger), here
after Celery stored a FAILURE, and after a revoked task was discarded. It is kept
through retries and deferrals, which re-queue the same reference; each attempt that
reads it extends its life to the record's, so a retry always finds it. What is never
deleted (a submission whose publish failed, a worker lost for good) expires with it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from celery.signals import task_failure, task_revoked
from redis.exceptions import RedisError

from shared_schemas.email import SendEmailRequest
from shared_schemas.stored_content import (
    ContentMismatch,
    QueuedEmail,
    attach,
    content_key,
    field_names,
)
from shared_schemas.tasks import SEND_EMAIL
from worker_service import persist
from worker_service.errors import ContentMissing

log = logging.getLogger(__name__)


def with_attachments(task: Task, email: QueuedEmail, deadline: float, ttl: int) -> SendEmailRequest:
    """``email`` with its stored attachments in place (itself when it has none stored),
    read through Redis errors until ``deadline``; the key then lives ``ttl`` seconds
    more. ContentMissing when they are gone or damaged."""
    ref = email.content_ref
    if ref is None:
        return email
    client: redis.Redis = task.backend.client
    fields = field_names(len(ref.attachments))

    def read() -> list[bytes | None]:
        with client.pipeline(transaction=False) as pipe:
            pipe.hmget(ref.key, fields)
            pipe.expire(ref.key, ttl)
            files, _ = pipe.execute()
        return list(files)

    files = persist.until(deadline, read, f"read the attachments of {task.request.id}")
    present = [data for data in files if data is not None]
    if len(present) != len(fields):
        raise ContentMissing(
            f"the mail's {len(fields)} attachment(s) are no longer stored ({ref.key} "
            "expired or was deleted); it is not sent without them"
        )
    try:
        return attach(email, present)
    except ContentMismatch as exc:
        raise ContentMissing(f"the mail's stored attachments are damaged: {exc}") from None


def discard(client: redis.Redis, task_id: str) -> None:
    """Delete the task's stored attachments, if any. Best effort: they expire anyway."""
    try:
        client.delete(content_key(task_id))
    except (RedisError, OSError):
        log.warning("could not delete the attachments of %s; they expire", task_id, exc_info=True)


@task_failure.connect
def _failed_for_good(sender: Task | None = None, task_id: str | None = None, **_: Any) -> None:
    # A FAILURE is final: a retry is a RETRY (on_retry), a deferral an Ignore, and a
    # failed message is acknowledged (task_acks_on_failure_or_timeout).
    if sender is not None and sender.name == SEND_EMAIL and task_id:
        discard(sender.backend.client, task_id)


@task_revoked.connect
def _revoked(sender: Task | None = None, request: Any = None, **_: Any) -> None:
    # A task revoked through Celery (REVOKED) never runs again. A cancel that never
    # reaches a worker must delete content_key(task_id) itself, or leave it to its TTL.
    task_id = getattr(request, "id", None)
    if sender is not None and sender.name == SEND_EMAIL and task_id:
        discard(sender.backend.client, task_id)
