"""``/templates``: each API key's stored templates (api_service.templates_store).

Not hot paths: FastAPI's usual way throughout.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from fastapi.exceptions import RequestValidationError

from api_service.deps import CurrentCaller, ServicesDep
from api_service.template_rendering import compile_problems
from api_service.templates_store import TemplateStore, TooManyTemplates
from shared_schemas.content import TemplateName
from shared_schemas.templates import (
    MAX_TEMPLATES_PER_KEY,
    StoredTemplate,
    TemplateBody,
    TemplateList,
    TemplateVersion,
)

# The largest PUT body: the sources' limits in characters, each up to 6 bytes in JSON.
MAX_TEMPLATE_REQUEST_BYTES = 8 * 1024 * 1024


async def _templates(services: ServicesDep) -> TemplateStore:
    return services.templates


Caller = CurrentCaller
Store = Annotated[TemplateStore, Depends(_templates)]
Name = Annotated[TemplateName, Path(description="Letters, digits, '.', '_', '-'; up to 64.")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown API key (with a WWW-Authenticate header)."},
    503: {"description": "Redis did not answer; nothing was changed. Retry later."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "This API key has no template of that name."}
}

router = APIRouter(prefix="/templates", tags=["templates"])


@router.put(
    "/{name}",
    response_model=TemplateVersion,
    summary="Store a template (a new version of it)",
    responses={
        **_RESPONSES,
        409: {"description": f"This API key keeps {MAX_TEMPLATES_PER_KEY} templates already."},
        422: {"description": "Not a valid template: detail says which part and line."},
    },
    max_body_size=MAX_TEMPLATE_REQUEST_BYTES,
)
async def put_template(name: Name, body: TemplateBody, owner: Caller, store: Store) -> Any:
    """Stores the template for the caller's API key and returns its new version.

    Mails accepted before keep the version they were rendered from.
    """
    problems = compile_problems(body)
    if problems:
        raise RequestValidationError(problems)
    try:
        return await store.put(owner, name, body)
    except TooManyTemplates:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this API key keeps {MAX_TEMPLATES_PER_KEY} templates already; delete one first",
        ) from None


@router.get(
    "/{name}",
    response_model=StoredTemplate,
    summary="A stored template",
    responses={**_RESPONSES, **_NOT_FOUND},
)
async def get_template(name: Name, owner: Caller, store: Store) -> Any:
    found = await store.get(owner, name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no template named {name!r}")
    return found


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a template",
    responses={**_RESPONSES, **_NOT_FOUND},
)
async def delete_template(name: Name, owner: Caller, store: Store) -> Response:
    """Removes it. Mails already accepted are not affected; its version numbers are not
    reused if the name is stored again."""
    if not await store.delete(owner, name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no template named {name!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "",
    response_model=TemplateList,
    summary="The caller's templates",
    responses=_RESPONSES,
)
async def list_templates(owner: Caller, store: Store) -> Any:
    return TemplateList(templates=await store.names(owner))
