"""Prometheus metrics for the worker, collected across its prefork children.

Tasks run in pool child processes, each with its own memory, so plain in-process
counters would be split across (and lost with) children. prometheus-client's
multiprocess mode has every process write its samples to files in
PROMETHEUS_MULTIPROC_DIR; the main process merges them when scraped, on
WORKER_METRICS_PORT. This module must be imported before prometheus_client is
anywhere else, so the directory is set before the library picks its storage.

Each worker (main process and its children) gets a fresh directory of its own, inside
PROMETHEUS_MULTIPROC_DIR if that is set, else in the temp directory: two workers sharing
one would add up each other's samples, and a restarted worker would count on from its
predecessor's.
"""

from __future__ import annotations

import os
import tempfile

_base = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="email-worker-metrics-", dir=_base)

from prometheus_client import Counter, Histogram  # noqa: E402  (after the directory is set)

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
