"""Error types the API maps to HTTP answers, and the handlers that do it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class BackendUnavailable(Exception):
    """Redis (the broker or the result store) did not answer in time."""


class ContractViolation(Exception):
    """A worker stored a result that does not match the task's shared model."""


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
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
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "the task queue is unavailable; nothing was queued, try again later"},
        headers={"Retry-After": "5"},
    )


async def _contract_violation(request: Request, exc: Exception) -> JSONResponse:
    log.error("contract violation: %s", exc)
    return JSONResponse(
        status_code=status.HTTP_502_BAD_GATEWAY,
        content={"detail": str(exc)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BackendUnavailable, _backend_unavailable)
    app.add_exception_handler(ContractViolation, _contract_violation)
