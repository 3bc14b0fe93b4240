"""``POST /send-email/batch`` and ``GET /batches/{batch_id}``.

A batch is validated whole (one bad message refuses all of them, its ``loc`` naming
the message) and submitted as one group: every record in one round trip, every message
in a second, each one script, so all are queued or none (api_service.dispatch,
``submit_all``; docs/design.md, "Batches").
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from api_service.batches import task_ids
from api_service.deps import CurrentCaller, ServicesDep
from api_service.errors import BackendUnavailable
from api_service.idempotency import IdempotencyConflict, payload_digest
from api_service.models import InvalidInput, Problem
from api_service.responses import RETRY_AFTER, UNAUTHORIZED, unavailable
from api_service.routes.emails import IdempotencyKey
from api_service.template_rendering import Prepared, Renderer
from shared_schemas.batches import MAX_BATCH_MESSAGES, BatchRequest
from shared_schemas.status import TaskState
from shared_schemas.tasks import SEND_EMAIL

log = logging.getLogger(__name__)

_EXAMPLE_BATCH = "5d7c3f0e-2b1a-4c8e-9f6d-1a2b3c4d5e6f"
_EXAMPLE_TASKS = task_ids(_EXAMPLE_BATCH, 2)
# Finished: the states a task does not leave.
_FINISHED = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED})


class BatchAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": _EXAMPLE_BATCH,
                    "task_ids": list[JsonValue](_EXAMPLE_TASKS),
                    "status_url": f"http://127.0.0.1:8000/batches/{_EXAMPLE_BATCH}",
                }
            ]
        }
    )

    batch_id: str
    task_ids: list[str] = Field(description="One task per message, in the messages' order.")
    status_url: str = Field(description="The batch's progress; also in Location.")


class BatchProgress(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": _EXAMPLE_BATCH,
                    "submitted_at": "2026-11-22T10:00:00.000000+00:00",
                    "total": 500,
                    "counts": {
                        "PENDING": 120,
                        "SCHEDULED": 0,
                        "STARTED": 30,
                        "RETRY": 0,
                        "SUCCESS": 348,
                        "FAILURE": 2,
                        "REVOKED": 0,
                    },
                    "finished": 350,
                    "fraction_finished": 0.7,
                }
            ]
        }
    )

    batch_id: str
    submitted_at: str
    total: int = Field(description="Messages in the batch.")
    counts: dict[TaskState, int] = Field(description="Tasks in each status, every status listed.")
    finished: int = Field(description="Tasks that ended: SUCCESS, FAILURE or REVOKED.")
    fraction_finished: float = Field(ge=0, le=1, description="finished / total.")


router = APIRouter(tags=["batches"])

_INVALID_EXAMPLE = {
    "detail": [
        {
            "loc": ["body", "messages", 3, "to", 0],
            "msg": "value is not a valid email address: …",
            "type": "value_error",
        }
    ]
}


@router.post(
    "/send-email/batch",
    status_code=status.HTTP_202_ACCEPTED,
    summary=f"Queue 1-{MAX_BATCH_MESSAGES} emails at once",
    response_description="Queued: the broker holds every task. Poll `status_url`.",
    responses={
        202: {
            "headers": {
                "Location": {
                    "description": "The batch's progress URL (as `status_url`).",
                    "schema": {"type": "string", "format": "uri"},
                },
                "Idempotent-Replayed": {
                    "description": "`true` when this answers a replay with the same "
                    "Idempotency-Key (the first batch, not a new one).",
                    "schema": {"type": "string", "const": "true"},
                },
            }
        },
        **UNAUTHORIZED,
        409: {"model": Problem, "description": "The Idempotency-Key was used with another batch."},
        413: {"model": Problem, "description": "The body is over MAX_BATCH_REQUEST_BYTES."},
        415: {"model": Problem, "description": "The body is not JSON."},
        422: {
            "model": InvalidInput,
            "description": "Not a valid batch: each problem located by its message, e.g. "
            'loc ["body", "messages", 3, "to", 0] for the fourth message\'s first address.',
            "content": {"application/json": {"example": _INVALID_EXAMPLE}},
        },
        429: {
            "model": Problem,
            "description": "The batch would pass this key's RATE_LIMIT_PER_MINUTE.",
            "headers": {"Retry-After": RETRY_AFTER},
        },
        **unavailable("Redis did not answer; nothing was queued unless detail says so."),
    },
)
async def send_batch(
    batch: BatchRequest,
    caller: CurrentCaller,
    services: ServicesDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BatchAccepted:
    """Accepts 1-500 emails at once and answers 202 once the broker holds every task.

    All or nothing: one invalid message refuses the batch (422, its position in `loc`),
    and a 503 means none was queued (unless `detail` says they may have been: then a
    retry with the same Idempotency-Key settles it, queuing each once).
    """
    prepared = await _rendered(services.renderer, caller, batch)
    await services.rate_limiter.check(caller, len(batch.messages))
    dispatcher = services.dispatcher
    batch_id = str(uuid.uuid4())
    known_for = None
    replayed = False
    if idempotency_key is not None:
        keys = services.idempotency
        try:
            first = await keys.claim(caller, idempotency_key, payload_digest(batch), batch_id)
        except IdempotencyConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new batch",
            ) from None
        known_for = keys.ttl
        if first != batch_id:
            ids = task_ids(first, len(batch.messages))
            replayed = True
            response.headers["Idempotent-Replayed"] = "true"
            # A batch is queued whole or not at all, so its first task tells.
            if await dispatcher.was_queued(ids[0]):
                log.info("replayed batch", extra={"task_id": ids[0], "task": SEND_EMAIL})
                return _accepted(request, response, first, ids)
            # The first submission failed or is on its way: finish it, under its ids.
            batch_id = first
    ids = task_ids(batch_id, len(batch.messages))
    # The batch's record first: once a task can run, its batch can be read.
    await services.batches.record(batch_id, caller, len(ids))
    try:
        await dispatcher.submit_all(
            SEND_EMAIL,
            [(mail.email, task_id) for mail, task_id in zip(prepared, ids, strict=True)],
            caller,
            known_for=known_for,
            templates=[mail.template for mail in prepared],
        )
    except BackendUnavailable:
        if known_for is None and not replayed:
            await services.batches.forget(batch_id)
        raise
    return _accepted(request, response, batch_id, ids)


async def _rendered(renderer: Renderer, owner: str, batch: BatchRequest) -> list[Prepared]:
    """Each message as it will be queued (its template rendered), or a 422 naming it."""
    prepared: list[Prepared] = []
    for position, message in enumerate(batch.messages):
        try:
            prepared.append(await renderer.prepare(owner, message))
        except RequestValidationError as exc:
            raise RequestValidationError(
                [
                    {**error, "loc": ("body", "messages", position, *error["loc"][1:])}
                    for error in exc.errors()
                ]
            ) from None
    return prepared


def _accepted(request: Request, response: Response, batch_id: str, ids: list[str]) -> BatchAccepted:
    status_url = f"{request.base_url}batches/{batch_id}"
    response.headers["Location"] = status_url
    return BatchAccepted(batch_id=batch_id, task_ids=ids, status_url=status_url)


@router.get(
    "/batches/{batch_id}",
    summary="A batch's progress",
    responses={
        **UNAUTHORIZED,
        404: {
            "model": Problem,
            "description": "No batch with this id was submitted with this key.",
        },
        **unavailable("Redis did not answer. Retry later."),
    },
)
async def batch_progress(
    caller: CurrentCaller,
    services: ServicesDep,
    batch_id: Annotated[uuid.UUID, Path(description="The batch_id POST /send-email/batch gave.")],
) -> BatchProgress:
    """How far the batch got: its tasks counted by status, and the fraction finished."""
    found = await services.batches.find(str(batch_id), caller)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id}")
    counts = dict.fromkeys(TaskState, 0)
    for task in await services.task_store.statuses(found.task_ids, caller):
        # None: a record gone before its batch's (it should not be: written after).
        if task is not None:
            counts[task.status] += 1
    finished = sum(counts[state] for state in _FINISHED)
    return BatchProgress(
        batch_id=found.batch_id,
        submitted_at=found.submitted_at.isoformat(),
        total=found.size,
        counts=counts,
        finished=finished,
        fraction_finished=finished / found.size,
    )
