"""MAX_REQUEST_BYTES: a larger request body is refused with 413 before it is parsed.

An ASGI middleware rather than FastAPI's ``max_body_size``: Starlette's limiter answers
an over-long Content-Length in text/plain, and only a body streamed past the limit in
JSON. Here both are ``{"detail": ...}``, like every other error.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException, status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """``max_body_size`` for every path but those ``per_path`` names, each with its own
    limit and the setting that sets it (``{"/send-email/batch": (8388608,
    "MAX_BATCH_REQUEST_BYTES")}``)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_size: int,
        per_path: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.default = (max_body_size, "MAX_REQUEST_BYTES")
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.per_path.get(scope["path"], self.default)
        detail = f"the request body is over {limit} bytes ({setting})"
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The server reads no more than Content-Length says (and refuses one
                # that is not a number), so a declared length is all there is to check.
                if value.isdigit() and int(value) > limit:
                    answer = JSONResponse({"detail": detail}, status.HTTP_413_CONTENT_TOO_LARGE)
                    await answer(scope, receive, send)
                else:
                    await self.app(scope, receive, send)
                return
        await self.app(scope, _counting(receive, limit, detail), send)


def _counting(receive: Receive, limit: int, detail: str) -> Receive:
    """A chunked body: refused as soon as it passes the limit."""
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI re-raises an HTTPException met reading the body: the app's
                # handler answers it, before anything was parsed.
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)
        return message

    return counting_receive
