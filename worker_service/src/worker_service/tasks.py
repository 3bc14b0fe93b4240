"""Task handlers, registered by the names in shared_schemas.tasks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_init

from shared_schemas import addresses
from shared_schemas.email import EmailResult
from shared_schemas.stored_content import QueuedEmail
from shared_schemas.tasks import SEND_EMAIL
from worker_service import progress
from worker_service.backoff import retry_delay
from worker_service.celery_app import settings
from worker_service.contract_task import LEASE_MARGIN, ContractTask
from worker_service.delivery_ledger import DeliveryLedger
from worker_service.errors import TransientDeliveryError
from worker_service.message import build_message, message_id_for
from worker_service.metrics import SMTP_SECONDS
from worker_service.smtp import Delivery, deliver
from worker_service.stored_content import with_attachments
from worker_service.webhook_events import AnnouncingTask

log = logging.getLogger(__name__)


@worker_init.connect
def _special_use_domains_as_the_api_decided(**_: Any) -> None:
    # The payload is validated again here (pydantic=True), but which special-use domains
    # are allowed is the API's decision (ALLOWED_SPECIAL_USE_DOMAINS): a mail it accepted
    # must not fail here because this node's setting differs, or changed meanwhile.
    addresses.allow_every_special_use_domain()


@shared_task(
    name=SEND_EMAIL,
    bind=True,
    # Announces each mail's end to its owner's webhook, if any (webhook_events).
    base=AnnouncingTask,
    pydantic=True,
    max_retries=settings.email_max_retries,
    default_retry_delay=settings.email_retry_base_delay,
    # The SUCCESS is stored with the delivery ledger's mark, in the same round trip
    # (delivery_ledger); Celery still stores RETRY and FAILURE.
    ignore_result=True,
    store_errors_even_if_ignored=True,
    # Celery's text of the result, for its success log line (logs.py blanks it there),
    # the pool's answer to the main process and task-succeeded events: the first 64
    # characters (the Message-ID) keep the recipients out of events, and cost ~10 µs a
    # mail where the whole result's 1,024 cost ~30 µs (measured).
    resultrepr_maxsize=64,
)
def send_email(self: ContractTask, email: QueuedEmail) -> EmailResult:
    """Deliver one email over SMTP. Celery validates ``email`` against the shared model."""
    task_id: str = self.request.id
    ledger = DeliveryLedger(self.backend.client, self.app.conf.result_expires)
    deadline = self.attempt_deadline()
    prior = ledger.delivered(self.delivered_before())
    if prior is not None and not prior.deferred:
        log.warning("task %s was delivered before; not sending it again", task_id)
        return prior

    # After the ledger's answer: a delivered mail's attachments were deleted with its
    # SUCCESS. Kept as long as the record from here on, for this attempt's retries.
    ttl = self.app.conf.result_expires + int(settings.task_time_limit + LEASE_MARGIN) + 1
    mail = with_attachments(self, email, deadline, ttl)
    message_id = message_id_for(task_id, settings.sender_address)
    date = prior.sent_at if prior else datetime.now(UTC)
    message = build_message(mail, mail_from=settings.mail_from, message_id=message_id, date=date)
    last_try = self.request.retries >= self.max_retries
    results: list[EmailResult] = []

    def on_accepted(delivery: Delivery) -> None:
        result = progress.merged(prior, delivery, message_id, date)
        if last_try:
            result = progress.given_up(result, self.request.retries)
        if result.deferred:
            ledger.mark_progress(self, result, deadline)
        else:
            ledger.mark_delivered(self, result, self.attempt_lease(), deadline)
            self.ended()
        results.append(result)

    recipients = progress.still_to_send(prior, email.envelope_recipients())
    try:
        with SMTP_SECONDS.time():
            deliver(message, recipients, settings, on_accepted, deadline)
    except TransientDeliveryError as exc:
        if last_try and prior is not None and prior.accepted:
            # Sent to some recipients before: the task succeeded for them.
            final = progress.given_up(prior, self.request.retries)
            ledger.mark_delivered(self, final, self.attempt_lease(), deadline)
            self.ended()
            return final
        raise _retry_later(self, exc) from None
    result = results[0]
    if result.deferred:
        deferred = TransientDeliveryError(
            f"deferred by the relay: {progress.deferred_reasons(result)}; retried for "
            "these recipients alone"
        )
        raise _retry_later(self, deferred)
    return result


def _retry_later(task: Task, exc: Exception) -> Exception:
    """Schedule the next attempt; after the last one, Celery re-raises ``exc`` (FAILURE)."""
    countdown = retry_delay(
        task.request.retries, settings.email_retry_base_delay, settings.email_retry_max_delay
    )
    log.info(
        "task %s: %s; retry %d in %.1fs", task.request.id, exc, task.request.retries + 1, countdown
    )
    retry: Exception = task.retry(exc=exc, countdown=countdown)
    return retry
