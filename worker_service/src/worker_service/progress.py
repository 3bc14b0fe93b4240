"""A mail's result across attempts, when the relay defers some recipients (4xx) and
takes it for the others.

The mail is retried for the deferred recipients alone, with the same Message-ID and
Date, as an MTA would; those it was sent to are never sent to again (the delivery
ledger keeps the result so far). When the retries run out, the still-deferred
recipients are reported as rejected, with the relay's last reply.
"""

from __future__ import annotations

from datetime import datetime

from shared_schemas.email import EmailResult, RejectedRecipient
from worker_service.smtp import Delivery


def still_to_send(prior: EmailResult | None, recipients: list[str]) -> list[str]:
    """The recipients this attempt sends to: all of them, or the ones deferred before."""
    if prior is None:
        return recipients
    return [refusal.address for refusal in prior.deferred]


def merged(
    prior: EmailResult | None, delivery: Delivery, message_id: str, date: datetime
) -> EmailResult:
    """The result so far, after this attempt's ``delivery`` of the message dated ``date``.

    ``sent_at`` is the first message's Date, so that a retry, which rebuilds the message
    from it, carries the same Date header even when the relay took the first one in a
    later second than it was built."""
    return EmailResult(
        message_id=message_id,
        accepted=[*(prior.accepted if prior else []), *delivery.accepted],
        rejected=[*(prior.rejected if prior else []), *delivery.rejected],
        deferred=delivery.deferred,
        sent_at=prior.sent_at if prior else date,
    )


def given_up(result: EmailResult, retries: int) -> EmailResult:
    """The final result when no retry is left: the deferred recipients are rejected."""
    if not result.deferred:
        return result
    rejected = [
        RejectedRecipient(
            address=refusal.address,
            code=refusal.code,
            reason=f"{refusal.reason} (still deferred after {retries} retries)",
        )
        for refusal in result.deferred
    ]
    return result.model_copy(update={"rejected": [*result.rejected, *rejected], "deferred": []})


def deferred_reasons(result: EmailResult) -> str:
    return "; ".join(f"{r.address}: {r.code} {r.reason}" for r in result.deferred)
