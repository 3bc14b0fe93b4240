"""The OpenAPI description of the inputs the hot routes read themselves (request_inputs).

FastAPI documents what an endpoint's signature declares; ``POST /send-email`` and
``GET /task-status/{id}`` declare only the ``Request``, so their body, parameters and
security are described here, from the same models and constraints they validate with,
and the body's schemas are added to the document's components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from api_service import auth
from api_service.request_inputs import IDEMPOTENCY_HEADER, IdempotencyKey
from shared_schemas.email import SendEmailRequest

_COMPONENT = "#/components/schemas/{model}"
_SECURITY: list[dict[str, list[str]]] = [{auth.SCHEME_NAME: []}]

SEND_EMAIL: dict[str, Any] = {
    "parameters": [
        {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": (
                "Retry-safe submissions: the same key with the same email returns the "
                "first task instead of sending again (for IDEMPOTENCY_TTL seconds). "
                "After a 503, a retry with the key queues the first task if it was not."
            ),
            "schema": TypeAdapter(IdempotencyKey).json_schema(),
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": _COMPONENT.format(model="SendEmailRequest")}}
        },
    },
    "security": _SECURITY,
}

TASK_STATUS: dict[str, Any] = {
    "parameters": [
        {
            "name": "task_id",
            "in": "path",
            "required": True,
            "description": "The id POST /send-email returned.",
            "schema": {"type": "string", "format": "uuid"},
        }
    ],
    "security": _SECURITY,
}


def install(app: FastAPI) -> None:
    """Add the request body's schemas and the bearer scheme to ``app``'s document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI keeps it in app.openapi_schema, returned next time
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        body = SendEmailRequest.model_json_schema(ref_template=_COMPONENT)
        schemas.update(body.pop("$defs", {}))
        schemas["SendEmailRequest"] = body
        components.setdefault("securitySchemes", {})[auth.SCHEME_NAME] = auth.SECURITY_SCHEME
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
