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

# The caller's labels (shared_schemas.labels), as JSON, written by the API with the
# record and only when given: a JSON array of strings, a JSON object of strings.
TAGS = "tags"
METADATA = "metadata"

RUNNING = "running"
WAITING = "waiting"


def record_key(task_id: str) -> str:
    return f"{KEY_PREFIX}{task_id}"


# The lease an attempt holds while it runs (worker_service.task_records); the API's
# cancel reads it too: a task whose lease is held has an attempt running.
LEASE_PREFIX = "email-dispatch:lease:"


def lease_key(task_id: str) -> str:
    return f"{LEASE_PREFIX}{task_id}"


# Listing indexes (docs/design.md, "Listing tasks"): sorted sets of task ids scored by
# submission time in microseconds, one per owner and one per owner and tag, written
# with the record.
OWNER_INDEX_PREFIX = "email-dispatch:tasks:"
TAG_INDEX_PREFIX = "email-dispatch:tagged:"


def owner_index_key(owner: str) -> str:
    return f"{OWNER_INDEX_PREFIX}{owner}"


def tag_index_key(owner: str, tag: str) -> str:
    # The owner is a fixed-length hex fingerprint, so the tag after it is unambiguous.
    return f"{TAG_INDEX_PREFIX}{owner}:{tag}"


# A batch's record (api_service.batches): its owner, size and submission time.
BATCH_PREFIX = "email-dispatch:batch:"


def batch_key(batch_id: str) -> str:
    return f"{BATCH_PREFIX}{batch_id}"


# Worker presence: each worker node refreshes its key every WORKER_HEARTBEAT seconds,
# and the key lapses WORKER_SEEN_TTL seconds after the last refresh.
WORKER_KEY_PREFIX = "email-dispatch:worker:"
WORKER_HEARTBEAT = 10
WORKER_SEEN_TTL = 30


def worker_key(hostname: str) -> str:
    return f"{WORKER_KEY_PREFIX}{hostname}"
