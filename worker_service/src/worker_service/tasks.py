"""Task handlers, registered by the names in shared_schemas.tasks."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import Task, shared_task

from shared_schemas.email import EmailResult, SendEmailRequest
from shared_schemas.tasks import SEND_EMAIL
from worker_service.celery_app import settings
from worker_service.contract_task import ContractTask
from worker_service.message import build_message, message_id_for
from worker_service.smtp import deliver


@shared_task(name=SEND_EMAIL, bind=True, base=ContractTask, pydantic=True)
def send_email(self: Task, email: SendEmailRequest) -> EmailResult:
    """Deliver one email over SMTP. Celery validates ``email`` against the shared model."""
    task_id: str = self.request.id
    message_id = message_id_for(task_id, settings.sender_address)
    message = build_message(
        email, mail_from=settings.mail_from, message_id=message_id, date=datetime.now(UTC)
    )
    delivery = deliver(message, email.envelope_recipients(), settings)
    return EmailResult(
        message_id=message_id,
        accepted=delivery.accepted,
        rejected=delivery.rejected,
        sent_at=datetime.now(UTC),
    )
