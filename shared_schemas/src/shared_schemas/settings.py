"""Settings both services read: where the broker and results are, and how long they live."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class QueueSettings(BaseSettings):
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
