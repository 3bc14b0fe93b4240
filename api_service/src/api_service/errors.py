"""Error types the API maps to HTTP answers, and the handlers that do it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class RateLimited(Exception):
    """The caller's key used up its submissions for this window."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class BackendUnavailable(Exception):
    """Redis (the broker or the result store) did not answer in time; nothing was queued."""


class OutcomeUnknown(BackendUnavailable):
    """Redis stopped answering while a task's message was being written: it may have
    been queued. A replay with the same Idempotency-Key queues it if it was not."""


class ContractViolation(Exception):
    """A worker stored a result that does not match the task's shared model."""


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if isinstance(exc.body, bytes):
        # FastAPI hands a body to validation as bytes only when its Content-Type is not
        # JSON (application/json or application/*+json): that is a 415, not a 422.
        return JSONResponse(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            content={"detail": "send the email as JSON, with Content-Type: application/json"},
        )
    # Each error names where (loc) and what (msg); the input is not echoed back,
    # it may be large or private.
    detail = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content=jsonable_encoder({"detail": detail}),
    )


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("backend unavailable: %s", exc)
    if isinstance(exc, OutcomeUnknown):
        detail = (
            "the task queue stopped answering while the email was being queued; it may "
            "have been queued. Retry with the same Idempotency-Key to have it queued once"
        )
    else:
        detail = "the task queue is unavailable; nothing was queued, try again later"
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": detail},
        headers={"Retry-After": "5"},
    )


async def _contract_violation(request: Request, exc: Exception) -> JSONResponse:
    log.error("contract violation: %s", exc)
    return JSONResponse(
        status_code=status.HTTP_502_BAD_GATEWAY,
        content={"detail": str(exc)},
    )


async def _rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    return JSONResponse(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        content={"detail": "too many submissions for this API key; slow down"},
        headers={"Retry-After": str(exc.retry_after)},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log, never to the caller.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content={"detail": "internal error; it has been logged"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BackendUnavailable, _backend_unavailable)
    app.add_exception_handler(ContractViolation, _contract_violation)
