"""The tutorial's ``celery_app.py``: one module-level app, broker and backend on Redis.

Worker: ``celery -A bench.baseline.celery_app worker``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://localhost:6379/0")

celery_app = Celery("baseline", broker=REDIS_URL, backend=REDIS_URL)

TASK_NAME = "baseline.send_email"


@celery_app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]  # celery ships no hints
def send_email(**email: Any) -> None:
    """The tutorial's task body would call an SMTP library here; the baseline does nothing."""
