"""The answers several routes share, as FastAPI's ``responses=`` documents them."""

from __future__ import annotations

from typing import Any

from api_service.models import Problem

Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 1},
}

UNAUTHORIZED: Responses = {
    401: {
        "model": Problem,
        "description": "Missing or unknown API key.",
        "headers": {
            "WWW-Authenticate": {
                "description": "Always `Bearer`.",
                "schema": {"type": "string", "const": "Bearer"},
            }
        },
    },
}


def unavailable(description: str) -> Responses:
    return {
        503: {
            "model": Problem,
            "description": description,
            "headers": {"Retry-After": RETRY_AFTER},
        }
    }
