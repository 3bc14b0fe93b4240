"""The contract between api_service and worker_service."""

from shared_schemas.email import EmailResult, RejectedRecipient, SendEmailRequest
from shared_schemas.status import TaskError, TaskResult, TaskState, TaskStatus
from shared_schemas.tasks import SEND_EMAIL, TASKS, TaskContract

__all__ = [
    "SEND_EMAIL",
    "TASKS",
    "EmailResult",
    "RejectedRecipient",
    "SendEmailRequest",
    "TaskContract",
    "TaskError",
    "TaskResult",
    "TaskState",
    "TaskStatus",
]
