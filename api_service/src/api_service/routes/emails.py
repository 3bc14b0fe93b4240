"""``POST /send-email``: queue an email, at most once per Idempotency-Key."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response, status

from api_service import due_index
from api_service.deps import CurrentCaller, ServicesDep
from api_service.idempotency import IdempotencyConflict, payload_digest
from api_service.models import InvalidInput, Problem, TaskAccepted
from api_service.responses import RETRY_AFTER, UNAUTHORIZED, unavailable
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import SEND_EMAIL

log = logging.getLogger(__name__)

# FastAPI's own route class: LeanRoute would save 14 % of a submission's instructions,
# under the 25 % a shortcut must save (docs/design.md, "Shortcuts kept, and what each
# saves").
router = APIRouter(tags=["emails"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Retry-safe submissions: the same key with the same email returns the first "
            "task instead of sending again (for IDEMPOTENCY_TTL seconds). After a 503, a "
            "retry with the key queues the first task if it was not."
        ),
        examples=["order-4711-receipt"],
    ),
]

_LOCATION = {
    "description": "The task's status URL (as `status_url`).",
    "schema": {"type": "string", "format": "uri"},
}


@router.post(
    "/send-email",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue an email for delivery",
    response_description="Queued: the broker holds the task. Poll `status_url`.",
    responses={
        202: {
            "headers": {
                "Location": _LOCATION,
                "Idempotent-Replayed": {
                    "description": "`true` when this answers a replay of an earlier "
                    "submission with the same Idempotency-Key (its task, not a new one).",
                    "schema": {"type": "string", "const": "true"},
                },
            }
        },
        400: {
            "model": Problem,
            "description": "The body could not be decoded (not UTF-8): FastAPI's answer.",
        },
        **UNAUTHORIZED,
        409: {
            "model": Problem,
            "description": "The Idempotency-Key was used before with another email.",
        },
        413: {
            "model": Problem,
            "description": "The request body is over MAX_REQUEST_BYTES (checked before "
            "it is parsed, so before the key and the body are).",
        },
        415: {
            "model": Problem,
            "description": "The body is not JSON (Content-Type: application/json).",
        },
        422: {"model": InvalidInput, "description": "Not a valid email; detail says where."},
        429: {
            "model": Problem,
            "description": "Too many submissions for this key (RATE_LIMIT_PER_MINUTE).",
            "headers": {"Retry-After": RETRY_AFTER},
        },
        **unavailable(
            "Redis did not answer. Nothing was queued, unless detail says the email may "
            "have been: then retry with the same Idempotency-Key, which queues it once "
            "either way."
        ),
    },
)
async def send_email(
    email: SendEmailRequest,
    caller: CurrentCaller,
    services: ServicesDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> TaskAccepted:
    """Accepts the email and answers 202 once the broker holds the task.

    Poll `status_url` (also in `Location`) for the outcome.
    """
    # A named template is rendered here, once; its 422s come before anything changes
    # (docs/design.md, "Templates").
    prepared = await services.renderer.prepare(caller, email)
    await services.rate_limiter.check(caller)
    task_id = str(uuid.uuid4())
    dispatcher = services.dispatcher
    known_for = None
    if idempotency_key is not None:
        keys = services.idempotency
        try:
            first = await keys.claim(caller, idempotency_key, payload_digest(email), task_id)
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
                    caller,
                    known_for=known_for,
                    template=prepared.template,
                )
            response.headers["Idempotent-Replayed"] = "true"
            return _accepted(request, response, first, email)

    # A 503 keeps the Idempotency-Key: the client's retry with it finishes this
    # submission, under this id, whether or not its message was queued.
    await dispatcher.submit(
        SEND_EMAIL, prepared.email, task_id, caller, known_for=known_for, template=prepared.template
    )
    # DEBUG: at INFO this line took 8 % of the event loop's CPU per submission
    # (make bench). /metrics counts submissions; the worker logs every task it receives.
    log.debug("queued", extra={"task_id": task_id, "task": SEND_EMAIL})
    return _accepted(request, response, task_id, email)


def _accepted(
    request: Request, response: Response, task_id: str, email: SendEmailRequest
) -> TaskAccepted:
    # The route is fixed; url_for would search the route table on every request.
    status_url = f"{request.base_url}task-status/{task_id}"
    response.headers["Location"] = status_url
    # SCHEDULED when send_at is later (docs/design.md, "Scheduling and cancel").
    state = due_index.first_state(email.send_at)
    return TaskAccepted(task_id=task_id, status=state, status_url=status_url)
