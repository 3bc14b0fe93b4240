"""Task names and what each task takes and returns: the dispatch table of the pair.

The API publishes by these names; the worker registers handlers under them. A task
name is namespaced (``<domain>.<verb>``) so later jobs do not collide with email.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared_schemas import stored_content
from shared_schemas.email import EmailResult, SendEmailRequest
from shared_schemas.stored_content import QueuedEmail
from shared_schemas.webhooks import WebhookDelivery, WebhookDeliveryResult

SEND_EMAIL = "email.send"
# Sends one signed event to the owner's webhook endpoint. Published by the worker's email
# handler (by name, like the API publishes email.send), never called directly.
WEBHOOK_DELIVER = "webhook.deliver"

# Queues: one per kind of work, so each gets its own workers, scaled on its own length.
EMAIL_QUEUE = "email"
# Webhook deliveries wait on receivers, not on the relay: their own queue, so a slow or
# dead receiver never holds up mail, and they can get a deployment of their own.
WEBHOOKS_QUEUE = "webhooks"


# Splits what a publisher passes into the payload's JSON and bytes stored beside the
# message under the task's key (shared_schemas.stored_content).
Splitter = Callable[[Any, str], tuple[dict[str, Any], list[bytes]]]


@dataclass(frozen=True)
class TaskContract:
    """A task's name, the queue it travels on, the keyword its payload travels under,
    and its models: ``payload`` is what the message carries and the handler validates,
    ``accepts`` what a publisher passes when that differs."""

    name: str
    queue: str
    argument: str
    payload: type[BaseModel]
    result: type[BaseModel]
    # Payload fields the publisher acts on and the handler never needs (``send_at``: the
    # task is published when it is due): left out of the message, so a worker that
    # predates one still takes the message.
    publisher_only: frozenset[str] = frozenset()
    accepts: type[BaseModel] | None = None
    split: Splitter | None = None

    def kwargs(self, payload: BaseModel) -> dict[str, Any]:
        """The JSON-ready keyword arguments for ``payload``, everything inline."""
        self._check(payload)
        dumped = payload.model_dump(
            mode="json", exclude_defaults=True, exclude=set(self.publisher_only)
        )
        return {self.argument: dumped}

    def message(self, payload: BaseModel, task_id: str) -> tuple[dict[str, Any], list[bytes]]:
        """The keyword arguments a publisher sends for ``payload`` as task ``task_id``,
        and the bytes it must store beside them first (``stored_content.content_key``)."""
        if self.split is None:
            return self.kwargs(payload), []
        self._check(payload)
        data, stored = self.split(payload, task_id)
        for name in self.publisher_only:
            data.pop(name, None)
        return {self.argument: data}, stored

    def _check(self, payload: BaseModel) -> None:
        accepts = self.accepts or self.payload
        if not isinstance(payload, accepts):
            raise TypeError(f"{self.name} takes {accepts.__name__}, not {type(payload)}")


TASKS: dict[str, TaskContract] = {
    SEND_EMAIL: TaskContract(
        name=SEND_EMAIL,
        queue=EMAIL_QUEUE,
        argument="email",
        payload=QueuedEmail,
        result=EmailResult,
        publisher_only=frozenset({"send_at"}),
        # The API accepts a SendEmailRequest; its attachments' bytes are stored beside
        # the message (docs/design.md, "Attachments, inline images and headers").
        accepts=SendEmailRequest,
        split=stored_content.split,
    ),
    WEBHOOK_DELIVER: TaskContract(
        name=WEBHOOK_DELIVER,
        queue=WEBHOOKS_QUEUE,
        argument="event",
        payload=WebhookDelivery,
        result=WebhookDeliveryResult,
    ),
}


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's ``task_routes``: publishers route by task name, with no worker code."""
    return {name: {"queue": contract.queue} for name, contract in TASKS.items()}


def queues() -> list[str]:
    """Every queue a task of the contract travels on."""
    return sorted({contract.queue for contract in TASKS.values()})
