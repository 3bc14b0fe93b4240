"""The worker's Celery app: ``celery -A worker_service worker``."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from celery import Celery
from pydantic import ValidationError

from shared_schemas.tasks import queues, task_routes
from worker_service import broker_transport
from worker_service.settings import WorkerSettings


def load_settings() -> WorkerSettings:
    try:
        return WorkerSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        sys.exit(f"worker_service: bad configuration: {problems}")


def make_celery(settings: WorkerSettings) -> Celery:
    app = Celery("worker_service")
    app.conf.update(
        broker_url=settings.celery_broker_url,
        result_backend=settings.celery_result_backend,
        # JSON only, both ways: a pickle message must never run code here.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # The worker consumes the queues of the tasks it serves, unless told otherwise
        # with `celery worker -Q` (a deployment dedicated to one queue).
        task_queues={name: {"routing_key": name} for name in queues()},
        task_default_queue=queues()[0],
        task_routes=task_routes(),
        # No STARTED state in the result store: the API reports STARTED from the task
        # record the worker writes anyway (task_records), one round trip cheaper per mail.
        task_track_started=False,
        result_expires=settings.result_ttl,
        # Ack after the task returns, not when it is received: a worker that dies
        # mid-send leaves the message in Redis to be redelivered instead of losing it.
        task_acks_late=True,
        # A pool child killed mid-task (OOM, segfault) is retried, counted against
        # the task's max_retries (Celery 5.7), so a mail that kills its process
        # fails after EMAIL_MAX_RETRIES instead of being requeued forever.
        task_reject_on_worker_lost=True,
        task_retry_on_worker_lost=True,
        # A backstop for an attempt stuck beyond SMTP_TIMEOUT per operation: the child
        # is killed and the task fails with TimeLimitExceeded. It counts in the
        # visibility arithmetic (settings). No soft limit: billiard can deliver its
        # signal twice, and a second one inside Task.retry() turns the retry into a
        # FAILURE (seen with Celery 5.7 during shutdown).
        task_time_limit=settings.task_time_limit,
        # SIGTERM is Celery's warm shutdown: no new tasks, running sends finish (bounded
        # by SMTP_TIMEOUT per operation and task_time_limit), prefetched messages go
        # back to the queue. Soft shutdown (REMAP_SIGTERM=SIGQUIT plus
        # worker_soft_shutdown_timeout) is deliberately not used: measured with Celery
        # 5.7 and Redis, its cancel left the running task's message unacked until the
        # visibility timeout, where warm shutdown loses no time. See docs/.
        # With late acks the prefetch count (multiplier x concurrency) includes running
        # messages: a node holds no more than it has processes, so a crash strands
        # little and long queues spread across nodes. (Throughput cost: docs/performance.md.)
        worker_prefetch_multiplier=1,
        # Redis redelivers a message not acked within this time to another worker
        # (kombu's Redis transport "visibility timeout"). It must exceed the longest
        # time a task can be held unacked, or a slow task runs twice.
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout,
            # kombu scans for unacked messages past their visibility timeout only every
            # interval x throttle seconds (10 x 10 by default). Scan every 5 s, so a
            # crashed worker's tasks come back within the timeout plus 5 s.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            # The scan's lock; a worker killed while holding it blocks scans this long.
            "unacked_mutex_expire": 30,
        },
        result_backend_transport_options={"visibility_timeout": settings.celery_visibility_timeout},
        # If the broker connection drops, cancel the running late-ack tasks rather
        # than run them on while their messages are redelivered elsewhere.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
    )
    if urlsplit(settings.celery_broker_url).scheme in broker_transport.SCHEMES:
        # One redis-py client per channel instead of one per command (broker_transport).
        app.conf.broker_transport = broker_transport.PATH
    return app


settings = load_settings()
app = make_celery(settings)
