"""The email worker. ``celery -A worker_service worker`` finds ``app`` here."""

from worker_service import task_records, tasks
from worker_service.celery_app import app

__all__ = ["app", "task_records", "tasks"]
