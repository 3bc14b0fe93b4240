"""``GET /tasks`` (the caller's tasks, newest first, a page at a time) and
``GET /tasks/{task_id}`` (one task, as ``GET /task-status/{task_id}`` answers)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api_service.deps import CurrentCaller, ServicesDep
from api_service.models import STATUS_EXAMPLE
from api_service.task_index import BadCursor, Cursor, TaskIndex
from api_service.task_store import TaskStore
from shared_schemas.labels import Tag
from shared_schemas.status import TaskState, TaskStatus

MAX_PAGE = 100
# A status as GET /task-status shows it, with the labels a listing is filtered by.
_EXAMPLE_TASK: dict[str, Any] = {
    **STATUS_EXAMPLE,
    "tags": ["receipt"],
    "metadata": {"order_id": "A-1042"},
}


class TaskPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"tasks": [_EXAMPLE_TASK], "next_cursor": "MTc5NTg1MjgwMDAwMDAwMDowYjVm"}]
        }
    )

    tasks: list[TaskStatus] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there is none. With a "
        "`status` filter a page may hold fewer than `limit` tasks, even none, while a "
        "cursor still follows."
    )


router = APIRouter()


async def _index(services: ServicesDep) -> TaskIndex:
    return services.task_index


async def _store(services: ServicesDep) -> TaskStore:
    return services.task_store


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
    503: {"description": "Redis did not answer. Retry later."},
}


@router.get(
    "/tasks",
    response_model=TaskPage,
    summary="The caller's tasks, newest first",
    responses={
        422: {"description": "A parameter is out of range or malformed."},
        **_AUTH_RESPONSES,
    },
)
async def list_tasks(
    owner: CurrentCaller,
    index: Annotated[TaskIndex, Depends(_index)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Tasks per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the page before.")
    ] = None,
    status_filter: Annotated[
        TaskState | None, Query(alias="status", description="Only tasks in this status.")
    ] = None,
    tag: Annotated[Tag | None, Query(description="Only tasks sent with this tag.")] = None,
    since: Annotated[
        AwareDatetime | None,
        Query(description="Only tasks submitted at or after this time (ISO 8601, with zone)."),
    ] = None,
) -> TaskPage:
    """Tasks submitted with this API key within RESULT_TTL, newest first, a page at a
    time: follow `next_cursor` until it is null. Filters combine."""
    after = None
    if cursor is not None:
        try:
            after = Cursor.decode(cursor)
        except BadCursor as exc:
            problem = {"type": "value_error", "loc": ("query", "cursor"), "msg": str(exc)}
            raise RequestValidationError([problem]) from None
    page = await index.page(owner, limit, after=after, tag=tag, status=status_filter, since=since)
    next_cursor = page.next_cursor.encode() if page.next_cursor else None
    return TaskPage(tasks=page.tasks, next_cursor=next_cursor)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskStatus,
    summary="One task, as GET /task-status/{task_id} answers",
    responses={
        200: {"content": {"application/json": {"example": _EXAMPLE_TASK}}},
        404: {"description": "No task with this id was submitted with this key."},
        422: {"description": "The task id is not a UUID."},
        **_AUTH_RESPONSES,
    },
)
async def get_task(
    owner: CurrentCaller,
    store: Annotated[TaskStore, Depends(_store)],
    task_id: Annotated[uuid.UUID, Path(description="The id POST /send-email returned.")],
) -> Response:
    found = await store.status(str(task_id), owner)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id}")
    # The same bytes as GET /task-status/{task_id}.
    return Response(found.model_dump_json(), media_type="application/json")
