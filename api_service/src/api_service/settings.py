"""API configuration, read from the environment."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared_schemas import addresses
from shared_schemas.content import MAX_ATTACHMENTS_BYTES, base64_length
from shared_schemas.settings import CommonSettings


class ApiSettings(CommonSettings):
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        description="Comma-separated bearer keys that may call the API (API_KEYS)."
    )
    max_request_bytes: int = Field(
        # The attachments' decoded limit after base64, and 2 MiB for the rest of the mail.
        default=base64_length(MAX_ATTACHMENTS_BYTES) + 2 * 1024 * 1024,
        gt=0,
        description="Largest request body accepted; larger ones get 413 (MAX_REQUEST_BYTES).",
    )
    max_batch_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Largest POST /send-email/batch body accepted; larger ones get 413 "
        "(MAX_BATCH_REQUEST_BYTES).",
    )
    rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description="Submissions per API key per minute; 0 turns the limit off.",
    )
    access_log: bool = Field(
        default=False,
        description="Log every request (ACCESS_LOG). Off by default: it costs ~5% of a "
        "request's CPU, and /metrics has latency by route and status.",
    )
    idempotency_ttl: int = Field(
        default=86_400,
        gt=0,
        description="Seconds an Idempotency-Key is remembered (IDEMPOTENCY_TTL).",
    )
    allowed_special_use_domains: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated special-use domains whose addresses (their subdomains' "
        "too) are accepted, e.g. corp.local,home.arpa (ALLOWED_SPECIAL_USE_DOMAINS).",
    )
    redis_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds before a broker or result-store call is given up as unavailable.",
    )

    @field_validator("celery_broker_url", "celery_result_backend")
    @classmethod
    def _redis_only(cls, url: str) -> str:
        # The API talks to both with redis-py directly (its publishes included:
        # api_service.dispatch), which takes these two schemes.
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"must be a redis:// or rediss:// URL, not {scheme}://")
        return url

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = [key.strip() for key in value.split(",") if key.strip()]
        if not value:
            raise ValueError("set API_KEYS to at least one key (comma-separated)")
        return value

    @field_validator("allowed_special_use_domains", mode="before")
    @classmethod
    def _special_use_domains(cls, value: object) -> object:
        if isinstance(value, str | list | tuple):
            return addresses.special_use_domains(value)
        return value

    def allow_special_use_domains(self) -> None:
        """Let the shared address validation accept ALLOWED_SPECIAL_USE_DOMAINS (once, at
        start-up: it is process-wide)."""
        addresses.allow_special_use_domains(self.allowed_special_use_domains)
