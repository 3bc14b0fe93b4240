"""The HTTP endpoints."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from api_service import due_index, openapi_docs, request_inputs
from api_service.auth import authenticated_caller
from api_service.dispatch import Dispatcher
from api_service.idempotency import IdempotencyConflict, IdempotencyKeys, payload_digest
from api_service.task_store import TaskStore
from shared_schemas.status import TaskState, TaskStatus
from shared_schemas.tasks import SEND_EMAIL

log = logging.getLogger(__name__)

_EXAMPLE_ID = "0b5f8a52-4c1e-4f4e-9d8f-3a2d1c7b6e01"


class TaskAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": _EXAMPLE_ID,
                    "status": "PENDING",
                    "status_url": f"http://127.0.0.1:8000/task-status/{_EXAMPLE_ID}",
                }
            ]
        }
    )

    task_id: str
    status: TaskState = Field(
        default=TaskState.PENDING, description="PENDING, or SCHEDULED with a future send_at."
    )
    status_url: str = Field(description="Where to poll for the outcome; also in Location.")


_STATUS_EXAMPLE: dict[str, Any] = {
    "task_id": _EXAMPLE_ID,
    "task": SEND_EMAIL,
    "status": "SUCCESS",
    "submitted_at": "2026-11-22T10:00:00.000000+00:00",
    "started_at": "2026-11-22T10:00:00.004000+00:00",
    "finished_at": "2026-11-22T10:00:00.020000+00:00",
    "retries": 0,
    "result": {
        "message_id": f"<{_EXAMPLE_ID}@example.com>",
        "accepted": ["alice@example.com", "bob@example.com"],
        "rejected": [],
        "sent_at": "2026-11-22T10:00:00.019000+00:00",
    },
    "error": None,
}


class InputProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: body, header or path, then the field.")
    msg: str
    type: str


class InvalidInput(BaseModel):
    """A 422: every problem found in the request (the input is never echoed)."""

    detail: list[InputProblem]


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
    503: {"description": "Redis did not answer; nothing was queued. Retry later."},
}


def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.task_store
    return store


async def send_email(request: Request) -> Response:
    """Accepts the email and answers 202 once the broker holds the task.

    Poll `status_url` for the outcome.
    """
    owner = authenticated_caller(request)
    email, idempotency_key = await request_inputs.submission(request)
    # A named template is rendered here, once; its 422s come before anything changes.
    prepared = await request.app.state.template_renderer.prepare(owner, email)
    await request.app.state.rate_limiter.check(owner)
    task_id = str(uuid.uuid4())
    dispatcher = _dispatcher(request)
    keys: IdempotencyKeys = request.app.state.idempotency
    known_for = None
    if idempotency_key is not None:
        try:
            first = await keys.claim(owner, idempotency_key, payload_digest(email), task_id)
        except IdempotencyConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "this Idempotency-Key was already used with a different email; "
                "use a new key for a new email",
            ) from None
        # The task's "queued" marker lives as long as the key: while the key answers,
        # the marker tells whether the first submission's message was queued.
        known_for = keys.ttl
        if first != task_id:
            log.info("replayed submission", extra={"task_id": first, "task": SEND_EMAIL})
            if not await dispatcher.was_queued(first):
                # The first submission failed (503) or is still on its way: finish it,
                # under its id; its message is queued once either way (publish_once).
                await dispatcher.submit(
                    SEND_EMAIL,
                    prepared.email,
                    first,
                    owner,
                    known_for=known_for,
                    template=prepared.template,
                )
            return _accepted(request, first, due_index.first_state(email.send_at), replayed=True)

    # A 503 keeps the Idempotency-Key: the client's retry with it finishes this
    # submission, under this id, whether or not its message was queued.
    await dispatcher.submit(
        SEND_EMAIL, prepared.email, task_id, owner, known_for=known_for, template=prepared.template
    )
    # DEBUG: at INFO this line took 8 % of the event loop's CPU per submission
    # (make bench). /metrics counts submissions; the worker logs every task it receives.
    log.debug("queued", extra={"task_id": task_id, "task": SEND_EMAIL})
    return _accepted(request, task_id, due_index.first_state(email.send_at))


def _accepted(
    request: Request, task_id: str, state: TaskState, *, replayed: bool = False
) -> Response:
    # The route is fixed; url_for would search the route table on every request.
    status_url = f"{request.base_url}task-status/{task_id}"
    headers = {"Location": status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = TaskAccepted(task_id=task_id, status=state, status_url=status_url).model_dump_json()
    # Serialised once, here (response_model still documents it): returned as a model,
    # FastAPI would validate and serialise it again (~12 % of the event loop's CPU).
    return Response(body, status.HTTP_202_ACCEPTED, headers, media_type="application/json")


async def task_status(request: Request) -> Response:
    """The status and outcome of a queued task."""
    owner = authenticated_caller(request)
    task_id = request_inputs.task_id(request)
    found = await _store(request).status(task_id, owner)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id}")
    # Serialised once, here: returned as a model, FastAPI would validate the TaskStatus
    # it was just built as against response_model, then serialise it (~5 % of the CPU).
    return Response(found.model_dump_json(), media_type="application/json")


class RequestHandlerRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns the ``Response`` itself.

    FastAPI's request handler solves an endpoint's parameters on every request, even when
    the only one is the ``Request`` (~16 % of a status read, profiled); these endpoints
    read their inputs themselves (request_inputs), so the route calls them directly.
    FastAPI documents overriding ``get_route_handler`` for this ("Custom Request and
    APIRoute class"); the route is still an APIRoute, so it is still documented.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        d = self.dependant
        params = (d.body_params, d.path_params, d.query_params, d.header_params, d.cookie_params)
        if d.dependencies or any(params):
            # They would be skipped without a word: a dependency added to the app or the
            # route (auth, say) would never run.
            raise TypeError(f"{self.path}: a RequestHandlerRoute takes only the Request")
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


def add_routes(app: FastAPI, max_body_size: int) -> None:
    """The two endpoints, on the app itself: FastAPI matches the routes of an included
    router twice per request (~10 % of a status read's instructions)."""
    app.router.add_api_route(
        "/send-email",
        send_email,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=TaskAccepted,
        responses={
            **_AUTH_RESPONSES,
            409: {"description": "The Idempotency-Key was used before with another email."},
            413: {"description": "The request body is over MAX_REQUEST_BYTES."},
            415: {"description": "The body is not JSON (Content-Type: application/json)."},
            422: {"model": InvalidInput, "description": "Not a valid email; detail says where."},
            429: {"description": "Too many submissions for this key; see Retry-After."},
            503: {
                "description": (
                    "Redis did not answer. Nothing was queued, unless detail says the "
                    "email may have been: then retry with the same Idempotency-Key, "
                    "which queues it once either way."
                )
            },
        },
        summary="Queue an email for delivery",
        openapi_extra=openapi_docs.SEND_EMAIL,
        route_class_override=RequestHandlerRoute,
        # Starlette's limiter: 413 on Content-Length, or as soon as a streamed body
        # passes the limit, before it is parsed. On this route alone: FastAPI applies an
        # app-level limit again at router and route level, and the others read no body.
        max_body_size=max_body_size,
    )
    app.router.add_api_route(
        "/task-status/{task_id}",
        task_status,
        methods=["GET"],
        name="task_status",
        response_model=TaskStatus,
        responses={
            200: {"content": {"application/json": {"example": _STATUS_EXAMPLE}}},
            404: {"description": "No task with this id was submitted with this key."},
            422: {"model": InvalidInput, "description": "The task id is not a UUID."},
            **_AUTH_RESPONSES,
        },
        summary="The status and outcome of a queued task",
        openapi_extra=openapi_docs.TASK_STATUS,
        route_class_override=RequestHandlerRoute,
    )
