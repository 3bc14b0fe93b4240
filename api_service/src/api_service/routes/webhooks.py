"""``PUT``, ``GET`` and ``DELETE /webhook``: the caller's endpoint for signed delivery
events (docs/design.md, "Webhook events")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api_service.deps import CurrentCaller, ServicesDep
from api_service.webhook_store import Endpoint, WebhookStore
from api_service.webhook_targets import TargetCheck, TargetRefused
from shared_schemas.webhook_urls import MAX_URL_LENGTH, url_problem
from shared_schemas.webhooks import EventType

router = APIRouter(tags=["webhooks"])

_EXAMPLE_URL = "https://hooks.example.com/email-events"
_EXAMPLE: dict[str, Any] = {
    "url": _EXAMPLE_URL,
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw1Bc3m3dnRLo=",
    "created_at": "2026-11-22T10:00:00.000000+00:00",
    "updated_at": "2026-11-22T10:00:00.000000+00:00",
    "events": [event.value for event in EventType],
}
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
    503: {"description": "Redis did not answer; nothing was changed. Retry later."},
}


class WebhookRegistration(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"url": _EXAMPLE_URL}]}
    )

    url: str = Field(
        max_length=MAX_URL_LENGTH,
        description="Where to POST events: https:// (or http://), no credentials, a host "
        "that resolves to public addresses.",
    )

    @field_validator("url")
    @classmethod
    def _usable(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


class WebhookEndpoint(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    url: str
    secret: str = Field(
        description="The signing secret (Standard Webhooks, whsec_ + base64): verify each "
        "event's webhook-signature with it. Kept when the URL changes."
    )
    created_at: datetime
    updated_at: datetime
    events: list[EventType] = Field(
        default_factory=lambda: list(EventType), description="The events it receives."
    )


async def _store(services: ServicesDep) -> WebhookStore:
    return services.webhooks


async def _targets(services: ServicesDep) -> TargetCheck:
    return services.webhook_targets


Owner = CurrentCaller
Store = Annotated[WebhookStore, Depends(_store)]
Targets = Annotated[TargetCheck, Depends(_targets)]


def _shown(endpoint: Endpoint) -> WebhookEndpoint:
    return WebhookEndpoint(
        url=endpoint.url,
        secret=endpoint.secret,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


@router.put(
    "/webhook",
    response_model=WebhookEndpoint,
    status_code=status.HTTP_200_OK,
    summary="Register this API key's webhook endpoint",
    responses={
        201: {"model": WebhookEndpoint, "description": "Registered; the secret is new."},
        200: {"description": "The URL was changed; the secret is kept."},
        422: {
            "description": "Not a usable URL, or its host does not resolve or resolves to a "
            "loopback, private or link-local address; detail says which. Nothing changed."
        },
        **_AUTH_RESPONSES,
    },
)
async def put_webhook(
    registration: WebhookRegistration,
    owner: Owner,
    store: Store,
    targets: Targets,
    response: Response,
) -> WebhookEndpoint:
    """Events (`email.delivered`, `email.failed`, `email.cancelled`) for this key's
    mails are POSTed to `url`, signed per the Standard Webhooks spec with the returned
    secret. One endpoint per API key: a second PUT replaces the URL."""
    try:
        await targets.check(registration.url)
    except TargetRefused as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "url"), "msg": str(exc)}]
        ) from None
    endpoint, created = await store.put(owner, registration.url)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _shown(endpoint)


@router.get(
    "/webhook",
    response_model=WebhookEndpoint,
    summary="This API key's webhook endpoint",
    responses={404: {"description": "No endpoint is registered."}, **_AUTH_RESPONSES},
)
async def get_webhook(owner: Owner, store: Store) -> WebhookEndpoint:
    endpoint = await store.get(owner)
    if endpoint is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no webhook is registered for this key")
    return _shown(endpoint)


@router.delete(
    "/webhook",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove this API key's webhook endpoint",
    responses={
        204: {"description": "Removed: events not yet delivered are dropped."},
        404: {"description": "No endpoint is registered."},
        **_AUTH_RESPONSES,
    },
)
async def delete_webhook(owner: Owner, store: Store) -> Response:
    if not await store.delete(owner):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no webhook is registered for this key")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
