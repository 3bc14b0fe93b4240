"""Render a mail's template once, at submission, into its subject, text and HTML.

Jinja2's sandboxed environment (no access to Python internals through the variables)
with ``StrictUndefined`` (a variable the mail does not give is an error, never empty
text); HTML is autoescaped, the subject and text are not. Every failure is a 422 that
names the template, its version and, where it can, the variable. Why at the API and not
in the worker: docs/design.md, "Templates".
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import JsonValue, ValidationError

from api_service.templates_store import TemplateStore
from shared_schemas.content import TemplateUsed
from shared_schemas.email import SendEmailRequest
from shared_schemas.templates import StoredTemplate, TemplateBody

# Immutable: a template cannot change the caller's lists and dicts while rendering.
_TEXT = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
_PARTS = (("subject", _TEXT), ("text", _TEXT), ("html", _HTML))
# The mail's fields each part fills.
_FIELD = {"subject": "subject", "text": "body", "html": "html"}
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")
# Compiled templates by (owner, name, version): a version's sources never change.
_CACHE_SIZE = 256


@dataclass(frozen=True)
class Prepared:
    """The mail to queue (rendered when it named a template) and the template used."""

    email: SendEmailRequest
    template: TemplateUsed | None


def compile_problems(body: TemplateBody) -> list[dict[str, Any]]:
    """The 422 problems of a template's sources that do not compile (for PUT)."""
    problems: list[dict[str, Any]] = []
    for part, environment in _PARTS:
        source = getattr(body, part)
        if source is None:
            continue
        try:
            environment.from_string(source)
        except TemplateSyntaxError as exc:
            problems.append(
                _problem(("body", part), f"does not compile: line {exc.lineno}: {exc.message}")
            )
    return problems


class Renderer:
    def __init__(self, store: TemplateStore) -> None:
        self._store = store
        self._compiled: OrderedDict[tuple[str, str, int], dict[str, Template]] = OrderedDict()

    async def prepare(self, owner: str, email: SendEmailRequest) -> Prepared:
        """The mail as it will be queued; a 422 if its template is unknown or fails."""
        ref = email.template
        if ref is None:
            return Prepared(email, None)
        stored = await self._store.get(owner, ref.name)
        if stored is None:
            raise RequestValidationError(
                [_problem(("body", "template", "name"), f"no template named {ref.name!r}")]
            )
        label = f"template {ref.name!r} (version {stored.version})"
        rendered = self._render(owner, stored, ref.variables, label)
        try:
            email = SendEmailRequest.model_validate(
                {**email.model_dump(exclude={"template"}), **rendered}
            )
        except ValidationError as exc:
            raise RequestValidationError(_rendered_problems(exc, label)) from None
        return Prepared(email, TemplateUsed(name=ref.name, version=stored.version))

    def _render(
        self, owner: str, stored: StoredTemplate, variables: dict[str, JsonValue], label: str
    ) -> dict[str, str]:
        compiled = self._compile(owner, stored, label)
        rendered: dict[str, str] = {}
        for part, template in compiled.items():
            try:
                rendered[_FIELD[part]] = template.render(variables)
            except UndefinedError as exc:
                missing = _UNDEFINED.match(exc.message or "")
                loc: tuple[str, ...] = ("body", "template", "variables")
                if missing is not None:
                    loc = (*loc, missing.group(1))
                raise RequestValidationError(
                    [_problem(loc, f"{label}, {part}: {exc.message}: give it in variables")]
                ) from None
            except SecurityError as exc:
                raise RequestValidationError(
                    [_problem(("body", "template"), f"{label}, {part}: not allowed: {exc}")]
                ) from None
            except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
                raise RequestValidationError(
                    [_problem(("body", "template"), f"{label}, {part}: could not render: {exc}")]
                ) from None
        return rendered

    def _compile(self, owner: str, stored: StoredTemplate, label: str) -> dict[str, Template]:
        key = (owner, stored.name, stored.version)
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        compiled = {}
        for part, environment in _PARTS:
            source = getattr(stored, part)
            if source is None:
                continue
            try:
                compiled[part] = environment.from_string(source)
            except TemplateSyntaxError as exc:
                # PUT refuses these; one stored before that check, or by hand, ends here.
                raise RequestValidationError(
                    [
                        _problem(
                            ("body", "template", "name"),
                            f"{label}, {part}, does not compile: line {exc.lineno}: {exc.message}",
                        )
                    ]
                ) from None
        self._compiled[key] = compiled
        if len(self._compiled) > _CACHE_SIZE:
            self._compiled.popitem(last=False)
        return compiled


def _rendered_problems(exc: ValidationError, label: str) -> list[dict[str, Any]]:
    """The rendered mail's problems: a rendered field's at the template, named."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        if loc and loc[0] in ("subject", "body", "html"):
            part = {"body": "text"}.get(str(loc[0]), str(loc[0]))
            problems.append(
                _problem(
                    ("body", "template"),
                    f"{label} renders a {part} that is refused: {error['msg']}",
                )
            )
        else:
            problems.append({**error, "loc": ("body", *loc)})
    return problems


def _problem(loc: tuple[str | int, ...], message: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": message}
