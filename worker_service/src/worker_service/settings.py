"""Worker configuration, read from the environment."""

from __future__ import annotations

from email.utils import parseaddr
from enum import StrEnum
from functools import cached_property

from pydantic import Field, SecretStr, field_validator, model_validator

from shared_schemas.settings import CommonSettings


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
            "Seconds one attempt may run before its process is killed (TimeLimitExceeded). "
            "Also the longest a SIGTERM'd worker takes to drain."
        ),
    )

    @field_validator("mail_from")
    @classmethod
    def _has_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(ch in value for ch in "\r\n"):
            raise ValueError("MAIL_FROM must be an address or 'Name <address>'")
        return value

    worker_metrics_port: int = Field(
        default=9808,
        ge=0,
        lt=65536,
        description="Port of the worker's Prometheus endpoint; 0 turns it off.",
    )

    @model_validator(mode="after")
    def _visibility_covers_longest_hold(self) -> WorkerSettings:
        # With late acks a message stays unacknowledged from fetch to finish. A retry
        # is a new message with a countdown that the worker holds, unacked, until it
        # is due, and then runs for up to the time limit. Redis must not redeliver it
        # in that time, or it would run twice.
        longest_hold = self.email_retry_max_delay + self.task_time_limit
        if self.celery_visibility_timeout <= longest_hold:
            raise ValueError(
                f"CELERY_VISIBILITY_TIMEOUT ({self.celery_visibility_timeout}s) must exceed "
                f"EMAIL_RETRY_MAX_DELAY + TASK_TIME_LIMIT ({longest_hold:g}s), or a task "
                "waiting for its retry could be delivered twice"
            )
        return self

    @cached_property
    def sender_address(self) -> str:
        # Read twice per mail (the Message-ID, the envelope): parsed once.
        return parseaddr(self.mail_from)[1]
