"""The worker's Celery app: ``celery -A worker_service worker``."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from celery import Celery
from pydantic import ValidationError

from shared_schemas.tasks import queues, task_routes
from worker_service import broker_transport
from worker_service.settings import WorkerSettings

# Mails in flight per node: `celery worker --concurrency` overrides it.
DEFAULT_CONCURRENCY = 64
REDIS_SOCKET_TIMEOUT = 5


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
        # The pool: threads, many per node (docs/design.md, "The worker's pool"). A
        # mail spends nearly all its time waiting for the relay (two round trips, tens
        # of ms each to a provider), so a node keeps 64 mails in flight in one process
        # (~100 MB) where prefork needed a process, ~70 MB, per mail in flight.
        # Threads cannot be killed, so an attempt is bounded by its own deadline
        # (TASK_TIME_LIMIT, enforced by worker_service.watchdog), not Celery's
        # time limits, which this pool does not have.
        worker_pool="threads",
        worker_concurrency=DEFAULT_CONCURRENCY,
        # SIGTERM is Celery's warm shutdown: no new tasks, running sends finish (bounded
        # by the attempt's deadline), prefetched messages go back to the queue.
        # A lost broker connection does not cancel running attempts (threads cannot be
        # cancelled anyway): they finish, their deliveries recorded through the outage
        # (persist), and the task's lease keeps a copy of a message restored meanwhile
        # from sending beside them (task_records).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Celery's Redis result backend waits 120 s on a silent socket by default; the
        # worker's writes retry within the attempt's deadline instead (persist).
        redis_socket_timeout=REDIS_SOCKET_TIMEOUT,
        redis_socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
        # With late acks the prefetch count (multiplier x concurrency) includes running
        # messages: a node holds no more than it has processes, so a crash strands
        # little and long queues spread across nodes.
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
        broker_connection_retry_on_startup=True,
        # Task events from the start (`celery worker -E`): Flower sees a worker's first tasks.
        worker_send_task_events=True,
    )
    if urlsplit(settings.celery_broker_url).scheme in broker_transport.SCHEMES:
        # A fetch that never holds a message Redis has let go of, and one redis-py
        # client per channel instead of one per command (broker_transport).
        app.conf.broker_transport = broker_transport.PATH
    return app


settings = load_settings()
app = make_celery(settings)
