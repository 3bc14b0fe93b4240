"""Worker configuration, read from the environment."""

from __future__ import annotations

import ssl
from email.utils import parseaddr
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Address
from pathlib import Path

from pydantic import (
    Field,
    FilePath,
    IPvAnyAddress,
    SecretStr,
    field_validator,
    model_validator,
)

from shared_schemas.settings import CommonSettings

# The quota's bounds (worker_service.quota): the longest a mail waits for its turn in an
# attempt, and the countdown of one put back because its turn was further away.
QUOTA_MAX_WAIT = 10.0
QUOTA_DEFER_COUNTDOWN = 5.0


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class WorkerSettings(CommonSettings):
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_ca_file: FilePath | None = Field(
        default=None,
        description="A PEM file of CA certificates trusted for the relay in addition to the "
        "system's (a company's private CA).",
    )
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds per SMTP operation.")
    smtp_keepalive: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a pool process keeps an idle SMTP session for its next mail; "
        "0 opens and closes (QUIT) one per mail.",
    )
    mail_from: str = Field(
        default="no-reply@example.com",
        description="The From header and envelope sender: 'addr' or 'Name <addr>'.",
    )
    email_max_retries: int = Field(
        default=5, ge=0, description="Retries after a transient failure or a lost worker."
    )
    email_retry_base_delay: float = Field(
        default=10.0, ge=0, description="Seconds before the first retry; doubles each time."
    )
    email_retry_max_delay: float = Field(
        default=300.0, ge=0, description="Longest wait between two retries."
    )
    task_time_limit: int = Field(
        default=60,
        ge=1,
        description=(
            "Seconds one attempt may take, from its start to the delivery's record: past "
            "it the SMTP exchange is cut off and the mail retried. Also the longest a "
            "SIGTERM'd worker takes to drain."
        ),
    )
    smtp_rate_limit: float = Field(
        default=0,
        ge=0,
        description="Mails per second to the relay across every worker node sharing the "
        "broker; 0: no limit.",
    )

    @field_validator("mail_from")
    @classmethod
    def _has_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(ch in value for ch in "\r\n"):
            raise ValueError("MAIL_FROM must be an address or 'Name <address>'")
        return value

    webhook_retry_base_delay: float = Field(
        default=10.0, ge=0, description="Seconds before a webhook's first retry; doubles."
    )
    webhook_retry_max_delay: float = Field(
        default=1800.0,
        ge=1,
        description="Longest wait between two calls of one webhook event (and never more "
        "than CELERY_VISIBILITY_TIMEOUT - WEBHOOK_TIMEOUT - 5).",
    )
    webhook_max_age: float = Field(
        default=86_400.0,
        gt=0,
        description="Seconds after the event that its delivery is given up: it then counts "
        "in email_dispatch_webhook_events_failed_total.",
    )

    @property
    def webhook_longest_wait(self) -> float:
        """The longest countdown between two calls of an event. A retry's message is held
        unacked while it waits, so the wait plus the call stays inside the visibility
        timeout (docs/delivery-guarantees.md, "The visibility timeout arithmetic"). Unlike
        a mail's, an event's hold is not refused at start-up when the timeout is short: a
        redelivered event is a duplicate with the same webhook-id, which receivers drop."""
        room = self.celery_visibility_timeout - self.webhook_timeout - 5
        return max(1.0, min(self.webhook_retry_max_delay, room))

    worker_metrics_port: int = Field(
        default=9808,
        ge=0,
        lt=65536,
        description="Port of the worker's Prometheus endpoint; 0 turns it off.",
    )
    # Every interface by default: in a container or a pod the scraper reaches the worker
    # from outside it. A worker on a shared host (make run) binds 127.0.0.1 instead.
    worker_metrics_addr: IPvAnyAddress = Field(
        default=IPv4Address("0.0.0.0"),  # noqa: S104 (deliberate, see above)
        description="Address the worker's Prometheus endpoint listens on: an IPv4 or "
        "IPv6 address, e.g. 127.0.0.1 for this host only.",
    )

    @property
    def longest_hold(self) -> float:
        """The longest a message stays unacked. With late acks that is from fetch to
        finish: a retry is a new message with a countdown that the worker holds until it
        is due, then it may wait for its turn under the quota, then it runs for up to
        the time limit (docs/delivery-guarantees.md, "The visibility timeout
        arithmetic")."""
        if not self.smtp_rate_limit:
            return self.email_retry_max_delay + self.task_time_limit
        countdown = max(self.email_retry_max_delay, QUOTA_DEFER_COUNTDOWN)
        return countdown + QUOTA_MAX_WAIT + self.task_time_limit

    @model_validator(mode="after")
    def _visibility_covers_longest_hold(self) -> WorkerSettings:
        # Redis must not redeliver a message while it is held, or it would run twice.
        if self.celery_visibility_timeout <= self.longest_hold:
            terms = "EMAIL_RETRY_MAX_DELAY + TASK_TIME_LIMIT"
            if self.smtp_rate_limit:
                terms = (
                    f"max(EMAIL_RETRY_MAX_DELAY, {QUOTA_DEFER_COUNTDOWN:g}) + "
                    f"{QUOTA_MAX_WAIT:g} (the quota's wait) + TASK_TIME_LIMIT"
                )
            raise ValueError(
                f"CELERY_VISIBILITY_TIMEOUT ({self.celery_visibility_timeout}s) must exceed "
                f"{terms} ({self.longest_hold:g}s), or a task waiting for its retry could "
                "be delivered twice"
            )
        return self

    @field_validator("smtp_ca_file")
    @classmethod
    def _loads_as_pem(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=value)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"SMTP_CA_FILE {value} holds no PEM certificate: {exc}") from None
        return value

    @cached_property
    def tls_context(self) -> ssl.SSLContext:
        """The system's CAs, plus SMTP_CA_FILE's; verification is always on."""
        context = ssl.create_default_context()
        if self.smtp_ca_file is not None:
            context.load_verify_locations(cafile=self.smtp_ca_file)
        return context

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """Texts that must never reach a status, a log line or a metric (smtp_outcomes)."""
        password = self.smtp_password.get_secret_value() if self.smtp_password else ""
        return tuple(secret for secret in (password, self.smtp_username or "") if secret)

    @cached_property
    def sender_address(self) -> str:
        # Read twice per mail (the Message-ID, the envelope): parsed once.
        return parseaddr(self.mail_from)[1]
