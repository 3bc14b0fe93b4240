"""The API's own response models (the email and the task status are shared_schemas')."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_schemas.status import TaskState
from shared_schemas.tasks import SEND_EMAIL

EXAMPLE_ID = "0b5f8a52-4c1e-4f4e-9d8f-3a2d1c7b6e01"


class TaskAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": EXAMPLE_ID,
                    "status": "PENDING",
                    "status_url": f"http://127.0.0.1:8000/task-status/{EXAMPLE_ID}",
                }
            ]
        }
    )

    task_id: str
    status: TaskState = Field(
        default=TaskState.PENDING, description="PENDING, or SCHEDULED with a future send_at."
    )
    status_url: str = Field(description="Where to poll for the outcome; also in Location.")


class Problem(BaseModel):
    """Every error but a 422: what went wrong, in words."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "invalid API key"}]},
    )

    detail: str


class InputProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: body, header or path, then the field.")
    msg: str
    type: str


class InvalidInput(BaseModel):
    """A 422: every problem found in the request (the input is never echoed)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "to", 0],
                            "msg": "value is not a valid email address: An email address "
                            "must have an @-sign.",
                            "type": "value_error",
                        }
                    ]
                }
            ]
        }
    )

    detail: list[InputProblem]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Checks(BaseModel):
    broker: bool = Field(description="The broker's Redis answered PING.")
    result_store: bool = Field(description="The result store's Redis answered PING.")


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "checks": {"broker": True, "result_store": True},
                    "workers_seen": 3,
                }
            ]
        }
    )

    status: Literal["ok", "unavailable"]
    checks: Checks
    workers_seen: int | None = Field(
        description="Worker nodes seen in the last 30 s; null when the result store is "
        "away. Reported, not required: workers may be scaled to zero while idle."
    )


STATUS_EXAMPLE: dict[str, Any] = {
    "task_id": EXAMPLE_ID,
    "task": SEND_EMAIL,
    "status": "SUCCESS",
    "submitted_at": "2026-11-22T10:00:00.000000+00:00",
    "started_at": "2026-11-22T10:00:00.004000+00:00",
    "finished_at": "2026-11-22T10:00:00.020000+00:00",
    "retries": 0,
    "result": {
        "message_id": f"<{EXAMPLE_ID}@example.com>",
        "accepted": ["alice@example.com", "bob@example.com"],
        "rejected": [],
        "sent_at": "2026-11-22T10:00:00.019000+00:00",
    },
    "error": None,
}
