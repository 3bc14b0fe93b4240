"""The hot routes' inputs, read and validated as FastAPI would, without its dependency solving.

``POST /send-email`` and ``GET /task-status/{id}`` take the ``Request`` and read their
inputs here: FastAPI's per-request ``solve_dependencies`` (every parameter re-examined,
the bearer key a sub-dependency solved on its own) was ~10 % of a submission's and
~20 % of a status read's instructions (callgrind, docs/performance.md). The validation
is the same pydantic validation, each error raised as FastAPI raises it: a
``RequestValidationError`` whose ``loc`` starts with ``body``, ``header`` or ``path``,
all of a request's errors in one 422. What FastAPI would have documented from the
signatures is described in api_service.openapi_docs.
"""

from __future__ import annotations

import email.message
import uuid
from typing import Annotated, Any

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints, TypeAdapter, ValidationError

from shared_schemas.email import SendEmailRequest

IDEMPOTENCY_HEADER = "Idempotency-Key"
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]
_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)
_TASK_ID: TypeAdapter[uuid.UUID] = TypeAdapter(uuid.UUID)


async def submission(request: Request) -> tuple[SendEmailRequest, str | None]:
    """The email in the JSON body and the optional ``Idempotency-Key``, or a 422."""
    errors: list[dict[str, Any]] = []
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        try:
            key = _IDEMPOTENCY_KEY.validate_python(key)
        except ValidationError as exc:
            errors += _located(exc, ("header", IDEMPOTENCY_HEADER.lower()))
    body = await request.body()
    email_request: SendEmailRequest | None = None
    if not body:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
    elif not _is_json(request.headers.get("content-type")):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the email as JSON, with Content-Type: application/json",
        )
    else:
        try:
            email_request = SendEmailRequest.model_validate_json(body)
        except ValidationError as exc:
            errors += _located(exc, ("body",))
    if errors or email_request is None:
        raise RequestValidationError(errors)
    return email_request, key


def task_id(request: Request) -> str:
    """The ``{task_id}`` path parameter as a canonical UUID string, or a 422."""
    raw: str = request.path_params["task_id"]
    try:
        return str(_TASK_ID.validate_python(raw))
    except ValidationError as exc:
        raise RequestValidationError(_located(exc, ("path", "task_id"))) from None


def _located(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    # include_input=False: the 422 never echoes the input back (api_service.errors).
    return [
        {**error, "loc": (*prefix, *error["loc"])}
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters: FastAPI's rule."""
    if content_type == "application/json":
        return True
    if not content_type:
        return False
    parsed = email.message.Message()
    parsed["content-type"] = content_type
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
