"""MAX_REQUEST_BYTES: a larger request body is refused with 413 before it is parsed.

An ASGI middleware rather than FastAPI's ``max_body_size``: Starlette's limiter answers
an over-long Content-Length in text/plain, and only a body streamed past the limit in
JSON. Here both are ``{"detail": ...}``, like every other error.
"""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.detail = f"the request body is over {max_body_size} bytes (MAX_REQUEST_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The server reads no more than Content-Length says (and refuses one
                # that is not a number), so a declared length is all there is to check.
                if value.isdigit() and int(value) > self.max_body_size:
                    answer = JSONResponse(
                        {"detail": self.detail}, status.HTTP_413_CONTENT_TOO_LARGE
                    )
                    await answer(scope, receive, send)
                else:
                    await self.app(scope, receive, send)
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """A chunked body: refused as soon as it passes the limit."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    # FastAPI re-raises an HTTPException met reading the body: the app's
                    # handler answers it, before anything was parsed.
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self.detail)
            return message

        return counting_receive
