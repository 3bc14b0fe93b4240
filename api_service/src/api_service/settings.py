"""API configuration, read from the environment."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared_schemas.settings import CommonSettings


class ApiSettings(CommonSettings):
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        description="Comma-separated bearer keys that may call the API (API_KEYS)."
    )
    max_request_bytes: int = Field(
        default=2 * 1024 * 1024,
        gt=0,
        description="Largest request body accepted; larger ones get 413 (MAX_REQUEST_BYTES).",
    )
    # The submissions' Redis work (records, then publishes) runs in publish threads, each
    # taking every submission waiting, in batches of up to 16, two round trips a batch
    # (api_service.dispatch). Measured (make bench, 64 connections): one thread gave
    # 1,500 req/s against 1,370 for two; more threads only contend with the event loop for
    # the GIL. One thread sends about 16 / (2 x Redis RTT + 2 ms) submissions a second, so
    # a second one only pays off when Redis is several milliseconds away.
    publish_concurrency: int = Field(
        default=1,
        gt=0,
        description="Publish threads, each sending a batch of submissions at a time, and "
        "the size of the broker and record connection pools (PUBLISH_CONCURRENCY).",
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
    redis_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds before a broker or result-store call is given up as unavailable.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = [key.strip() for key in value.split(",") if key.strip()]
        if not value:
            raise ValueError("set API_KEYS to at least one key (comma-separated)")
        return value
