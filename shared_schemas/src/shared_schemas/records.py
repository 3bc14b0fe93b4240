"""The per-task record both services keep in Redis beside Celery's own result.

Celery answers PENDING for any id it has never heard of, so the API records each
submission; the worker adds when the task first started, whether an attempt is running
now, and how often it was retried. The API reports STARTED from ``attempt`` (the worker
does not have Celery store a STARTED state). The record lives at least as long as the
task's result (see ``CommonSettings.result_ttl``).
"""

from __future__ import annotations

KEY_PREFIX = "email-dispatch:task:"

# Hash fields.
TASK = "task"
OWNER = "owner"
SUBMITTED_AT = "submitted_at"
STARTED_AT = "started_at"
RETRIES = "retries"
ATTEMPT = "attempt"  # RUNNING while an attempt runs, WAITING while a retry is due
# The result so far (the task's result model, as JSON) while some recipients are deferred.
PROGRESS = "progress"
# The template the API rendered the mail from, as JSON (shared_schemas.content.TemplateUsed).
TEMPLATE = "template"
# Scheduled sending and cancel (docs/design.md, "Scheduling and cancel"). SEND_AT: the
# submission's send_at, as given (ISO 8601). SCHEDULED: present while the task waits in
# the due-time index (shared_schemas.schedule); the promoter removes it, and so does an
# attempt's start. CANCELLED: why the task was cancelled, and CANCELLED_AT when; an
# attempt never starts once it is set (worker_service.task_records).
SEND_AT = "send_at"
SCHEDULED = "scheduled"
CANCELLED = "cancelled"
CANCELLED_AT = "cancelled_at"

RUNNING = "running"
WAITING = "waiting"


def record_key(task_id: str) -> str:
    return f"{KEY_PREFIX}{task_id}"


# The lease an attempt holds while it runs (worker_service.task_records); the API's
# cancel reads it too: a task whose lease is held has an attempt running.
LEASE_PREFIX = "email-dispatch:lease:"


def lease_key(task_id: str) -> str:
    return f"{LEASE_PREFIX}{task_id}"


# Worker presence: each worker node refreshes its key every WORKER_HEARTBEAT seconds,
# and the key lapses WORKER_SEEN_TTL seconds after the last refresh.
WORKER_KEY_PREFIX = "email-dispatch:worker:"
WORKER_HEARTBEAT = 10
WORKER_SEEN_TTL = 30


def worker_key(hostname: str) -> str:
    return f"{WORKER_KEY_PREFIX}{hostname}"
