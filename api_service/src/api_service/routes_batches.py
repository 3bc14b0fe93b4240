"""``POST /send-email/batch`` and ``GET /batches/{batch_id}``.

A batch is validated whole (one bad message refuses all of them, its ``loc`` naming
the message) and submitted as one group: every record in one round trip, every message
in a second, each one script, so all are queued or none (api_service.dispatch,
``submit_all``; docs/design.md, "Batches").
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from api_service import auth
from api_service.auth import authenticated_caller
from api_service.batches import Batches, task_ids
from api_service.dispatch import Dispatcher
from api_service.errors import BackendUnavailable
from api_service.idempotency import IdempotencyConflict, IdempotencyKeys, payload_digest
from api_service.request_inputs import (
    _IDEMPOTENCY_KEY,
    IDEMPOTENCY_HEADER,
    IdempotencyKey,
    _is_json,
    _located,
)
from api_service.task_store import TaskStore
from api_service.template_rendering import Prepared, Renderer
from shared_schemas.batches import MAX_BATCH_MESSAGES, BatchRequest
from shared_schemas.status import TaskState
from shared_schemas.tasks import SEND_EMAIL

log = logging.getLogger(__name__)

_COMPONENT = "#/components/schemas/{model}"
_SECURITY: list[dict[str, list[str]]] = [{auth.SCHEME_NAME: []}]
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


async def _batch_inputs(request: Request) -> tuple[BatchRequest, str | None]:
    """The batch in the JSON body and the optional ``Idempotency-Key``: 415 or 422 as
    ``POST /send-email`` answers them (api_service.request_inputs), every problem in one
    422 with its message's position in ``loc``."""
    errors: list[dict[str, Any]] = []
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        try:
            key = _IDEMPOTENCY_KEY.validate_python(key)
        except ValidationError as exc:
            errors += _located(exc, ("header", IDEMPOTENCY_HEADER.lower()))
    body = await request.body()
    batch: BatchRequest | None = None
    if not body:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
    elif not _is_json(request.headers.get("content-type")):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the batch as JSON, with Content-Type: application/json",
        )
    else:
        try:
            batch = BatchRequest.model_validate_json(body)
        except ValidationError as exc:
            errors += _located(exc, ("body",))
    if errors or batch is None:
        raise RequestValidationError(errors)
    return batch, key


async def send_batch(request: Request) -> Response:
    """Accepts 1-500 emails at once and answers 202 once the broker holds every task.

    All or nothing: one invalid message refuses the batch (422, its position in `loc`),
    and a 503 means none was queued (unless `detail` says they may have been: then a
    retry with the same Idempotency-Key settles it, queuing each once).
    """
    owner = authenticated_caller(request)
    batch, idempotency_key = await _batch_inputs(request)
    prepared = await _rendered(request.app.state.template_renderer, owner, batch)
    await request.app.state.rate_limiter.check(owner, len(batch.messages))
    dispatcher: Dispatcher = request.app.state.dispatcher
    batches: Batches = request.app.state.batches
    batch_id = str(uuid.uuid4())
    known_for = None
    replayed = False
    if idempotency_key is not None:
        keys: IdempotencyKeys = request.app.state.idempotency
        try:
            first = await keys.claim(owner, idempotency_key, payload_digest(batch), batch_id)
        except IdempotencyConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new batch",
            ) from None
        known_for = keys.ttl
        if first != batch_id:
            ids = task_ids(first, len(batch.messages))
            # A batch is queued whole or not at all, so its first task tells.
            if await dispatcher.was_queued(ids[0]):
                log.info("replayed batch", extra={"task_id": ids[0], "task": SEND_EMAIL})
                return _accepted(request, first, ids, replayed=True)
            # The first submission failed or is on its way: finish it, under its ids.
            batch_id, replayed = first, True
    ids = task_ids(batch_id, len(batch.messages))
    # The batch's record first: once a task can run, its batch can be read.
    await batches.record(batch_id, owner, len(ids))
    try:
        await dispatcher.submit_all(
            SEND_EMAIL,
            [(mail.email, task_id) for mail, task_id in zip(prepared, ids, strict=True)],
            owner,
            known_for=known_for,
            templates=[mail.template for mail in prepared],
        )
    except BackendUnavailable:
        if known_for is None:
            await batches.forget(batch_id)
        raise
    return _accepted(request, batch_id, ids, replayed=replayed)


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


def _accepted(
    request: Request, batch_id: str, ids: list[str], *, replayed: bool = False
) -> Response:
    status_url = f"{request.base_url}batches/{batch_id}"
    headers = {"Location": status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = BatchAccepted(batch_id=batch_id, task_ids=ids, status_url=status_url)
    return Response(
        body.model_dump_json(), status.HTTP_202_ACCEPTED, headers, media_type="application/json"
    )


async def batch_progress(
    request: Request,
    owner: Annotated[str, Depends(authenticated_caller)],
    batch_id: Annotated[uuid.UUID, Path(description="The batch_id POST /send-email/batch gave.")],
) -> BatchProgress:
    """How far the batch got: its tasks counted by status, and the fraction finished."""
    batches: Batches = request.app.state.batches
    found = await batches.find(str(batch_id), owner)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id}")
    store: TaskStore = request.app.state.task_store
    counts = dict.fromkeys(TaskState, 0)
    for task in await store.statuses(found.task_ids, owner):
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


_INVALID = {
    "description": "Not a valid batch: detail lists each problem, e.g. "
    'loc ["body", "messages", 3, "to", 0] for the first address of the fourth message.',
    "content": {
        "application/json": {
            "example": {
                "detail": [
                    {
                        "loc": ["body", "messages", 3, "to", 0],
                        "msg": "value is not a valid email address: …",
                        "type": "value_error",
                    }
                ]
            }
        }
    },
}


def build_router(max_body_size: int) -> APIRouter:
    """The batch routes; ``max_body_size`` is MAX_BATCH_REQUEST_BYTES."""
    router = APIRouter()
    router.add_api_route(
        "/send-email/batch",
        send_batch,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchAccepted,
        summary=f"Queue 1-{MAX_BATCH_MESSAGES} emails at once",
        responses={
            401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
            409: {"description": "The Idempotency-Key was used before with another request."},
            413: {"description": "The request body is over MAX_BATCH_REQUEST_BYTES."},
            415: {"description": "The body is not JSON (Content-Type: application/json)."},
            422: _INVALID,
            429: {"description": "The batch would pass this key's RATE_LIMIT_PER_MINUTE."},
            503: {"description": "Redis did not answer; nothing was queued unless detail says so."},
        },
        openapi_extra={
            "parameters": [
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "As for POST /send-email: the same key with the same batch "
                    "returns the first batch_id and task_ids and queues nothing more.",
                    "schema": _idempotency_schema(),
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _batch_schema()}},
            },
            "security": _SECURITY,
        },
        # Starlette's limiter: 413 before the body is parsed (as on POST /send-email).
        max_body_size=max_body_size,
    )
    router.add_api_route(
        "/batches/{batch_id}",
        batch_progress,
        methods=["GET"],
        response_model=BatchProgress,
        summary="A batch's progress",
        responses={
            401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
            404: {"description": "No batch with this id was submitted with this key."},
            503: {"description": "Redis did not answer. Retry later."},
        },
        openapi_extra={"security": _SECURITY},
    )
    return router


def _idempotency_schema() -> dict[str, Any]:
    return TypeAdapter(IdempotencyKey).json_schema()


def _batch_schema() -> dict[str, Any]:
    """BatchRequest's schema, its messages referring to SendEmailRequest, which
    api_service.openapi_docs puts in the document's components with its own parts."""
    schema = BatchRequest.model_json_schema(ref_template=_COMPONENT)
    schema.pop("$defs", None)
    return schema
