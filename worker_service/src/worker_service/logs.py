"""Logging: JSON lines (or plain text), each record about a task carrying its task_id.

Celery sets up its own handlers (hijacking the root logger); the after_setup_*
signals re-point them at one formatter. Inside a task, the current task gives the id;
in the main process Celery's own task lines (received, succeeded, failed) pass the id
in their arguments.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_task
from celery.signals import after_setup_logger, after_setup_task_logger
from pythonjsonlogger.json import JsonFormatter

from worker_service.celery_app import settings

_FIELDS = "{asctime}{levelname}{name}{processName}{message}"

# Celery writes two INFO lines per task (received, succeeded). Neither format here uses
# the caller's file and line or the thread and process ids, so the records skip looking
# them up: the logging HOWTO's "Optimization" settings. The caller's lookup walks the
# stack on every record.
logging._srcfile = None
logging.logThreads = False
logging.logProcesses = False


# Celery attaches the task's arguments to its own task log lines (record.data); they are
# the mail itself (addresses, subject, body) and stay out of the logs.
_DATA_KEPT = {"id", "name", "runtime", "eta", "hostname", "exc"}
# Its success line prints the result too ("succeeded in 0.002s: {...}"): the recipients.
# The result is in the result store; the line keeps the outcome and the time.
_RESULT_PLACEHOLDER = "(result stored)"


class TaskContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            record.data = {key: value for key, value in data.items() if key in _DATA_KEPT}
        task = current_task
        request = getattr(task, "request", None) if task else None
        task_id = getattr(request, "id", None)
        task_name = getattr(task, "name", None)
        args = record.args
        if isinstance(args, dict) and "return_value" in args:
            record.args = args = {**args, "return_value": _RESULT_PLACEHOLDER}
        if task_id is None and isinstance(args, dict) and isinstance(args.get("id"), str):
            task_id, task_name = args["id"], args.get("name")
        if task_id is not None:
            record.task_id = task_id
            record.task_name = task_name
        return True


def _formatter() -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(
            _FIELDS,
            style="{",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "processName": "process",
            },
        )
    return logging.Formatter(
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_id)s %(message)s",
        defaults={"task_id": "-"},
    )


@after_setup_logger.connect
@after_setup_task_logger.connect
def _use_our_format(logger: logging.Logger, **_: Any) -> None:
    chosen = _formatter()
    for handler in logger.handlers:
        handler.setFormatter(chosen)
        if not any(isinstance(f, TaskContext) for f in handler.filters):
            handler.addFilter(TaskContext())
