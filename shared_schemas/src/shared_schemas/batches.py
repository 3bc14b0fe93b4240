"""Many emails in one request: ``POST /send-email/batch``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared_schemas.email import SendEmailRequest

MAX_BATCH_MESSAGES = 500

_EXAMPLE: dict[str, Any] = {
    "messages": [
        {
            "to": "alice@example.com",
            "subject": "Your receipt",
            "body": "Thanks for your order.",
            "tags": ["receipt"],
        },
        {
            "to": ["bob@example.com"],
            "subject": "Your receipt",
            "body": "Thanks for your order.",
            "metadata": {"order_id": "A-1043"},
        },
    ]
}


class BatchRequest(BaseModel):
    """Up to 500 emails, each as ``POST /send-email`` takes it; all accepted or none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    messages: list[SendEmailRequest] = Field(
        min_length=1,
        max_length=MAX_BATCH_MESSAGES,
        description=f"1-{MAX_BATCH_MESSAGES} emails; their tasks are created in this order.",
    )
