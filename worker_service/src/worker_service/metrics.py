"""Prometheus metrics for the worker.

prometheus-client's multiprocess mode has every process write its samples to files in
PROMETHEUS_MULTIPROC_DIR, merged when scraped on WORKER_METRICS_PORT. The shipped pool
is threads, one process, but a worker run with ``--pool prefork`` counts its children's
tasks the same way. This module must be imported before prometheus_client is anywhere
else, so the directory is set before the library picks its storage.

Each worker gets a fresh directory of its own, inside PROMETHEUS_MULTIPROC_DIR if that
is set, else in the temp directory: two workers sharing one would add up each other's
samples, and a restarted worker would count on from its predecessor's.
"""

from __future__ import annotations

import os
import tempfile

_base = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="email-worker-metrics-", dir=_base)

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402  (after the directory is set)

TASKS = Counter(
    "email_dispatch_worker_tasks",
    "Tasks the worker finished or retried, by task name and outcome.",
    ["task", "outcome"],
)
SMTP_SECONDS = Histogram(
    "email_dispatch_smtp_seconds",
    "Time to hand one mail to the SMTP server (connect to accepted).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUOTA_WAIT_SECONDS = Histogram(
    "email_dispatch_quota_wait_seconds",
    "Time a mail waited for its turn under SMTP_RATE_LIMIT before it was sent.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUOTA_WAITING = Gauge(
    "email_dispatch_quota_waiting",
    "Mails waiting for their turn under SMTP_RATE_LIMIT right now.",
    multiprocess_mode="livesum",
)
QUOTA_DEFERRED = Counter(
    "email_dispatch_quota_deferred",
    "Mails put back with a countdown because their turn was more than 10 s away.",
)
LEDGER_WRITE_FAILURES = Counter(
    "email_dispatch_ledger_write_failures",
    "Mails the relay accepted whose delivery could not be recorded before the attempt's "
    "limit: a redelivery of one of them would send it again.",
)
RELAY_MISCONFIGURED = Counter(
    "email_dispatch_relay_misconfigured",
    "Mails failed at once because the relay and the SMTP settings do not fit, by what to "
    "check: certificate, tls_handshake, starttls_not_offered, auth_not_offered, "
    "credentials, auth_or_tls_required, smtputf8_not_offered.",
    ["reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "email_dispatch_webhook_deliveries",
    "Calls of webhook endpoints by outcome: delivered (2xx), failed (anything else: the "
    "event is retried), dropped (the owner removed its endpoint meanwhile).",
    ["outcome"],
)
WEBHOOK_EVENTS_FAILED = Counter(
    "email_dispatch_webhook_events_failed",
    "Webhook events given up after WEBHOOK_MAX_AGE of failed calls, by event type.",
    ["event"],
)
WEBHOOK_EVENTS_NOT_QUEUED = Counter(
    "email_dispatch_webhook_events_not_queued",
    "Webhook events lost because Redis could not take them when their mail ended.",
)
SCHEDULED_PROMOTED_LATENESS = Histogram(
    "email_dispatch_scheduled_promotion_lateness_seconds",
    "How long after its send_at a scheduled mail was moved onto its queue (Redis's clock).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
)
