"""Webhook events: what a caller's endpoint receives when its mail reaches an end, and
where both services keep the endpoint.

The API registers one endpoint per API key (``PUT /webhook``) in the result store; the
email handler, when a mail is delivered or fails for good, queues a ``webhook.deliver``
task carrying the event, and that task signs it the Standard Webhooks way and POSTs it
to the endpoint registered *then* (docs/design.md, "Webhook events"). The signing secret
never travels in a queue message: the delivering task reads it by owner.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_schemas.email import EmailResult
from shared_schemas.status import TaskError, TaskState

# The endpoint of the API key whose fingerprint is <owner>: a hash with these fields.
ENDPOINT_KEY_PREFIX = "email-dispatch:webhook:"
URL = "url"
SECRET = "secret"  # noqa: S105  (a field name)
CREATED_AT = "created_at"
UPDATED_AT = "updated_at"

# Standard Webhooks secrets: "whsec_" and the base64 of 24 to 64 random bytes.
SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix)

# Event ids are derived from the task and the event type, so an event announced twice
# (a task run again after its worker died) carries the same ``webhook-id`` both times
# and a receiver that remembers ids drops the copy.
_EVENT_NAMESPACE = uuid.UUID("6f0f3c0e-2a53-4d0c-9a57-0f5b0a8e1d61")


def endpoint_key(owner: str) -> str:
    return f"{ENDPOINT_KEY_PREFIX}{owner}"


class EventType(StrEnum):
    DELIVERED = "email.delivered"
    FAILED = "email.failed"
    # Announced by the API when a cancel succeeds (api_service.events).
    CANCELLED = "email.cancelled"


def event_id(event_type: EventType, task_id: str) -> str:
    return f"msg_{uuid.uuid5(_EVENT_NAMESPACE, f'{event_type}:{task_id}').hex}"


class EmailEventData(BaseModel):
    """What happened to one mail: the ``data`` of an event."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    task: str = Field(description="The task name, e.g. email.send.")
    status: TaskState = Field(description="SUCCESS, FAILURE or REVOKED.")
    tags: list[str] = Field(default_factory=list, description="The submission's tags.")
    metadata: dict[str, str] = Field(default_factory=dict, description="The submission's metadata.")
    result: EmailResult | None = Field(default=None, description="Set on email.delivered.")
    error: TaskError | None = Field(default=None, description="Set on email.failed.")


class WebhookDelivery(BaseModel):
    """The payload of ``webhook.deliver``: one event for one owner's endpoint."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="The webhook-id header: the same on every attempt.")
    type: EventType
    owner: str = Field(description="The fingerprint of the API key whose endpoint gets it.")
    created_at: datetime = Field(description="When the event happened; retries end 24 h on.")
    data: EmailEventData

    def body(self) -> bytes:
        """The JSON the receiver gets, in the Standard Webhooks payload shape."""
        document: dict[str, Any] = {
            "type": self.type.value,
            "timestamp": self.created_at.isoformat(),
            "data": self.data.model_dump(mode="json"),
        }
        return json.dumps(document, separators=(",", ":")).encode()


class WebhookDeliveryResult(BaseModel):
    """How a delivery ended (``webhook.deliver`` stores no result; this is for logs)."""

    outcome: Literal["delivered", "dropped"] = Field(
        description="delivered: the endpoint answered 2xx; dropped: no endpoint any more."
    )
    attempts: int
    status_code: int | None = None
