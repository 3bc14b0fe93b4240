"""The status of a submitted task, as the API reports it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from shared_schemas.content import TemplateUsed
from shared_schemas.email import EmailResult


class TaskState(StrEnum):
    SCHEDULED = "SCHEDULED"  # waiting for its send_at
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


# One entry per task result model; a union once there is more than one task.
TaskResult = EmailResult


class TaskError(BaseModel):
    type: str = Field(description="The error's class, e.g. SMTPRecipientsRefused.")
    message: str


class TaskStatus(BaseModel):
    task_id: str
    task: str = Field(description="The task name, e.g. email.send.")
    status: TaskState
    submitted_at: datetime
    send_at: datetime | None = Field(
        default=None, description="When the mail was asked to go out (SCHEDULED until then)."
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    retries: int = 0
    template: TemplateUsed | None = Field(
        default=None,
        description="The template and version the mail was rendered from, when it was.",
    )
    result: TaskResult | None = Field(
        default=None,
        description="Set when status is SUCCESS; before that, while the relay has deferred "
        "some recipients, what was delivered so far (`deferred` lists the rest).",
    )
    error: TaskError | None = Field(
        default=None,
        description="Set on FAILURE, on RETRY with the error being retried, and on "
        "REVOKED (type Cancelled, with the reason).",
    )
    tags: list[str] = Field(default_factory=list, description="The tags it was sent with.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="The metadata it was sent with."
    )
