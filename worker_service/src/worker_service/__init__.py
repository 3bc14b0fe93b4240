"""The email worker. ``celery -A worker_service worker`` finds ``app`` here."""

# metrics first: it picks prometheus-client's multiprocess storage before anything
# else imports the library.
from worker_service import metrics  # noqa: I001
from worker_service import logs, metrics_server, task_records, tasks, webhook_tasks
from worker_service.celery_app import app
from worker_service.due_index import DuePromoter
from worker_service.presence import Presence

app.steps["worker"].add(Presence)
app.steps["worker"].add(DuePromoter)  # scheduled mails onto their queues when due

__all__ = ["app", "logs", "metrics", "metrics_server", "task_records", "tasks", "webhook_tasks"]
