"""``GET /task-status/{task_id}``: where a queued task is, and how it ended."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api_service.deps import CurrentCaller, ServicesDep
from api_service.lean_route import LeanRoute
from api_service.models import STATUS_EXAMPLE, InvalidInput, Problem
from api_service.responses import UNAUTHORIZED, unavailable
from shared_schemas.status import TaskStatus

# A hot route: LeanRoute runs it with less of FastAPI's per-request generality.
router = APIRouter(tags=["tasks"], route_class=LeanRoute)


@router.get(
    "/task-status/{task_id}",
    summary="The status and outcome of a queued task",
    responses={
        200: {"content": {"application/json": {"example": STATUS_EXAMPLE}}},
        **UNAUTHORIZED,
        404: {
            "model": Problem,
            "description": "No task with this id was submitted with this key.",
        },
        422: {"model": InvalidInput, "description": "The task id is not a UUID."},
        502: {
            "model": Problem,
            "description": "The worker stored a result that does not match the task's "
            "shared model (a contract violation, logged); the task's outcome is unknown "
            "to the API.",
        },
        **unavailable("Redis did not answer. Retry later."),
    },
)
async def task_status(
    task_id: Annotated[uuid.UUID, Path(description="The id POST /send-email returned.")],
    caller: CurrentCaller,
    services: ServicesDep,
) -> TaskStatus:
    """The status and outcome of a queued task."""
    found = await services.task_store.status(str(task_id), caller)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id}")
    return found
