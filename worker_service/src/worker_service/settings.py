"""Worker configuration, read from the environment."""

from __future__ import annotations

from email.utils import parseaddr
from enum import StrEnum

from pydantic import Field, SecretStr, field_validator

from shared_schemas.settings import QueueSettings


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class WorkerSettings(QueueSettings):
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds per SMTP operation.")
    mail_from: str = Field(
        default="no-reply@example.com",
        description="The From header and envelope sender: 'addr' or 'Name <addr>'.",
    )
    email_max_retries: int = Field(default=5, ge=0)
    email_retry_base_delay: float = Field(default=10.0, ge=0)

    @field_validator("mail_from")
    @classmethod
    def _has_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(ch in value for ch in "\r\n"):
            raise ValueError("MAIL_FROM must be an address or 'Name <address>'")
        return value

    @property
    def sender_address(self) -> str:
        return parseaddr(self.mail_from)[1]
