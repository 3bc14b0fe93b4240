"""``DELETE /tasks/{task_id}``: cancel a task that has not started (api_service.cancel)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from redis.exceptions import RedisError

from api_service.cancel import REASON, TooLate, Unknown
from api_service.deps import CurrentCaller, ServicesDep
from api_service.events import announce_cancelled
from api_service.task_store import CANCELLED_ERROR
from shared_schemas.status import TaskStatus
from shared_schemas.tasks import SEND_EMAIL

router = APIRouter()

_EXAMPLE_ID = "0b5f8a52-4c1e-4f4e-9d8f-3a2d1c7b6e01"
_CANCELLED_EXAMPLE: dict[str, Any] = {
    "task_id": _EXAMPLE_ID,
    "task": SEND_EMAIL,
    "status": "REVOKED",
    "submitted_at": "2026-11-22T10:00:00.000000+00:00",
    "send_at": "2026-11-23T09:00:00+01:00",
    "started_at": None,
    "finished_at": "2026-11-22T10:05:00.000000+00:00",
    "retries": 0,
    "result": None,
    "error": {"type": CANCELLED_ERROR, "message": REASON.format(task_id=_EXAMPLE_ID)},
}


def _detail(example: str) -> dict[str, Any]:
    return {"application/json": {"example": {"detail": example}}}


@router.delete(
    "/tasks/{task_id}",
    response_model=TaskStatus,
    summary="Cancel a task that has not started",
    responses={
        200: {
            "description": "Cancelled: the mail will never be sent (status REVOKED).",
            "content": {"application/json": {"example": _CANCELLED_EXAMPLE}},
        },
        401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
        404: {
            "description": "No task with this id was submitted with this key.",
            "content": _detail(f"no task {_EXAMPLE_ID}"),
        },
        409: {
            "description": "Too late: an attempt is running, or the task has finished "
            "(SUCCESS, FAILURE, or REVOKED already).",
            "content": _detail(f"task {_EXAMPLE_ID} has finished (SUCCESS); too late to cancel"),
        },
        503: {
            "description": "Redis did not answer; the task may not be cancelled. Retry.",
        },
    },
)
async def cancel_task(
    task_id: Annotated[uuid.UUID, Path(description="The id POST /send-email returned.")],
    owner: CurrentCaller,
    services: ServicesDep,
) -> TaskStatus:
    """Cancels the task while it has not started: `PENDING`, `SCHEDULED`, or waiting
    for a retry (`RETRY`). The mail is then never sent, even if a worker has already
    taken its message, and its status is `REVOKED` with the error type `Cancelled`."""
    task = str(task_id)
    try:
        outcome = await services.canceller.cancel(task, owner)
        if isinstance(outcome, Unknown):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task}")
        if isinstance(outcome, TooLate):
            if outcome.finished is None:
                why = "an attempt to send it is running"
            else:
                why = f"it has finished ({outcome.finished})"
            raise HTTPException(status.HTTP_409_CONFLICT, f"task {task}: {why}; too late to cancel")
        found = await services.task_store.status(task, owner)
    except (RedisError, OSError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"Redis did not answer ({type(exc).__name__}); the task may not have been "
            "cancelled: try again",
            headers={"Retry-After": "5"},
        ) from None
    if found is None:  # expired in between
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task}")
    # Only this path: a 404 or 409 cancelled nothing.
    await announce_cancelled(services.dispatcher, services.webhooks, owner, found)
    return found
