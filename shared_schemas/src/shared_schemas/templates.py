"""Stored templates as the API takes and shows them (``/templates/{name}``).

A template belongs to the API key that stored it. Each ``PUT`` makes a new version; a
mail names a template in place of its subject and text (``SendEmailRequest.template``)
and is rendered once, at the API, when it is accepted (docs/design.md, "Templates").
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared_schemas.email import MAX_BODY_CHARS, MAX_SUBJECT_LENGTH

# Templates one API key may keep at once.
MAX_TEMPLATES_PER_KEY = 100

_TEMPLATE_EXAMPLE: dict[str, JsonValue] = {
    "subject": "Welcome, {{ name }}",
    "text": "Hello {{ name }},\n\nyour {{ plan }} plan is ready.",
    "html": "<p>Hello {{ name }},</p><p>your <b>{{ plan }}</b> plan is ready.</p>",
}


class TemplateBody(BaseModel):
    """A template's sources, in Jinja2's syntax. The HTML is autoescaped; the subject and
    the text are not. A variable the mail does not give is an error, not empty text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_TEMPLATE_EXAMPLE]})

    subject: str = Field(
        min_length=1,
        max_length=MAX_SUBJECT_LENGTH,
        description="Renders to the subject: one line, at most 998 characters.",
    )
    text: str = Field(max_length=MAX_BODY_CHARS, description="Renders to the plain-text part.")
    html: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        description="Renders to the HTML alternative (autoescaped).",
    )


class TemplateVersion(BaseModel):
    """A template's name and current version."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "welcome", "version": 3, "updated_at": "2026-11-22T10:00:00+00:00"}
            ]
        }
    )

    name: str
    version: int = Field(description="1 for the first PUT; each PUT adds one, never reused.")
    updated_at: datetime


class StoredTemplate(TemplateVersion, TemplateBody):
    """A template as stored: its sources and its version."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "name": "welcome",
                    "version": 3,
                    "updated_at": "2026-11-22T10:00:00+00:00",
                    **_TEMPLATE_EXAMPLE,
                }
            ]
        },
    )


class TemplateList(BaseModel):
    """The caller's templates, by name."""

    templates: list[TemplateVersion]
