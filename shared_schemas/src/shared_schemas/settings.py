"""Settings both services read: where Redis is, how long results live, how to log."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def verify_tls_by_default(url: str) -> str:
    """A ``rediss://`` URL without ``ssl_cert_reqs`` gets ``ssl_cert_reqs=required``.

    kombu and redis-py skip certificate verification unless told otherwise; an
    encrypted connection to an unverified server is no protection. Pass
    ``ssl_cert_reqs=none`` explicitly to opt out (never in production).
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "ssl_cert_reqs" for key, _ in query):
        return url
    query.append(("ssl_cert_reqs", "required"))
    return urlunsplit(parts._replace(query=urlencode(query)))


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    celery_broker_url: str = Field(default="redis://localhost:6379/0")
    celery_result_backend: str = Field(default="redis://localhost:6379/0")
    result_ttl: int = Field(
        default=86_400,
        gt=0,
        description="Seconds a finished task's status stays readable (RESULT_TTL).",
    )
    celery_visibility_timeout: int = Field(
        default=3_600,
        gt=0,
        description="Seconds an unacknowledged message waits before Redis redelivers it.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per line; text: for people."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Webhooks: the API checks an endpoint when it is registered, the worker at every
    # call; both by the same rule (shared_schemas.webhook_urls).
    webhook_allow_private_networks: bool = Field(
        default=False,
        description="Let webhook endpoints be on loopback, private and link-local "
        "addresses (an intranet, tests).",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="Seconds one webhook call may take in all (resolving the host, "
        "connecting, sending, the reply's status line); also the API's wait for the "
        "host's addresses at registration.",
    )

    @field_validator("celery_broker_url", "celery_result_backend")
    @classmethod
    def _verify_tls(cls, url: str) -> str:
        return verify_tls_by_default(url)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
