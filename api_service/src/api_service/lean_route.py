"""``LeanRoute``: FastAPI's per-request work for the hot routes, without its generality.

The hot routes are written the way FastAPI's docs show: typed parameters, ``Depends``,
a response model; FastAPI builds their OpenAPI and their validation from the signature.
Its request handler, though, is general: every request solves the dependency tree
recursively, with cache keys and security scopes, parses the query string and the
cookies whether a route reads them or not, and checks for streams and generators. For
a status read that was a third of its instructions (docs/design.md, "API").

``LeanRoute.get_route_handler`` (FastAPI documents overriding it: "Custom Request and
APIRoute class") keeps what these routes need, done with FastAPI's own functions:
the body read and parsed as FastAPI does, the route's dependencies called, its header
and body parameters validated by ``request_params_to_args`` and
``request_body_to_args`` into the same errors, its plain path parameters by their
fields (what ``request_params_to_args`` comes to for them, without its per-request
look at each annotation), and the result serialised by the response model. A route it
does not cover gets FastAPI's handler, decided when the route is built; so does every
request while FastAPI's telemetry is on.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, params
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_PathParam = tuple[str, str, tuple[str, str], ModelField]
_Call = Callable[[Request], Coroutine[Any, Any, Any]]


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        if not _covered(self):
            return standard
        return _lean_handler(self, standard)


def _covered(route: APIRoute) -> bool:
    """Whether the lean handler does for this route all that FastAPI's would."""
    d = route.dependant
    calls = [sub.call for sub in d.dependencies]
    defaults = (
        route.response_model_include is None
        and route.response_model_exclude is None
        and route.response_model_by_alias
        and not route.response_model_exclude_unset
        and not route.response_model_exclude_defaults
        and not route.response_model_exclude_none
    )
    return (
        inspect.iscoroutinefunction(d.call)
        and route.response_field is not None
        and defaults
        and getattr(route.response_class, "value", None) is not None  # the default class
        and getattr(route.strict_content_type, "value", route.strict_content_type) is True
        and not d.query_params
        and not d.cookie_params
        and not (d.body_params and isinstance(d.body_params[0].field_info, params.Form))
        and d.http_connection_param_name is None
        and d.websocket_param_name is None
        and d.background_tasks_param_name is None
        and d.security_scopes_param_name is None
        and len(set(map(id, calls))) == len(calls)
        and all(_takes_only_the_request(sub) for sub in d.dependencies)
    )


def _takes_only_the_request(sub: Dependant) -> bool:
    call = sub.call
    is_async = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004  # a callable instance, e.g. a security scheme
    )
    return (
        is_async
        and sub.name is not None
        and sub.request_param_name is not None
        and not sub.dependencies
        and not (sub.path_params or sub.query_params or sub.header_params)
        and not (sub.cookie_params or sub.body_params)
        and sub.response_param_name is None
        and sub.background_tasks_param_name is None
        and sub.security_scopes_param_name is None
        and not sub.own_oauth_scopes
    )


def _lean_handler(route: APIRoute, standard: Handler) -> Handler:
    d = route.dependant
    endpoint: Callable[..., Coroutine[Any, Any, Any]] = d.call  # type: ignore[assignment]
    dependencies: list[tuple[str, _Call]] = [(sub.name, sub.call) for sub in d.dependencies]  # type: ignore[misc]
    path_params, header_params, body_params = d.path_params, d.header_params, d.body_params
    plain_path = _plain_path_params(path_params)
    embed = route._embed_body_fields
    request_name, response_name = d.request_param_name, d.response_param_name
    response_field = route.response_field
    assert response_field is not None  # _covered
    status_code = route.status_code

    async def handler(request: Request) -> Response:
        if get_telemetry_data() is not None:
            return await standard(request)  # FastAPI's spans for dependencies and endpoint
        if request.app.dependency_overrides:
            raise RuntimeError(f"{route.path}: a LeanRoute does not apply dependency_overrides")
        body = await _read_body(request) if body_params else PydanticUndefined
        values: dict[str, Any] = {}
        for name, call in dependencies:
            values[name] = await call(request)
        errors: list[Any] = []
        if plain_path is not None:
            # request_params_to_args for plain path parameters: the route matched, so
            # each is there, a string, validated by its field.
            for name, alias, loc, field in plain_path:
                value, problems = field.validate(request.path_params[alias], {}, loc=loc)
                if problems:
                    errors += problems
                else:
                    values[name] = value
        elif path_params:
            found, problems = request_params_to_args(path_params, request.path_params)
            values.update(found)
            errors += problems
        if header_params:
            found, problems = request_params_to_args(header_params, request.headers)
            values.update(found)
            errors += problems
        if body_params:
            found, problems = await request_body_to_args(body_params, body, embed)
            values.update(found)
            errors += problems
        if errors:
            received = None if body is PydanticUndefined else body
            raise RequestValidationError(errors, body=received)
        if request_name is not None:
            values[request_name] = request
        sub_response: Response | None = None
        if response_name is not None:
            # As FastAPI makes it: headers and a status the endpoint may set.
            sub_response = Response()
            del sub_response.headers["content-length"]
            sub_response.status_code = None  # type: ignore[assignment]
            values[response_name] = sub_response
        returned = await endpoint(**values)
        if isinstance(returned, Response):
            return returned
        value, problems = response_field.validate(returned, {}, loc=("response",))
        if problems:
            raise ResponseValidationError(errors=problems, body=returned)
        code = status_code or 200
        if sub_response is not None and sub_response.status_code:
            code = sub_response.status_code
        response = Response(
            response_field.serialize_json(value), code, media_type="application/json"
        )
        if sub_response is not None:
            response.headers.raw.extend(sub_response.headers.raw)
        return response

    return handler


def _plain_path_params(fields: list[ModelField]) -> list[_PathParam] | None:
    """Each path parameter's name, alias, error location and field, when every one is
    a plain value (no alias to choose, no model, no sequence), which FastAPI's
    ``request_params_to_args`` validates by its field alone; else None."""
    plain: list[_PathParam] = []
    for field in fields:
        annotation = field.field_info.annotation
        chosen = field.field_info.validation_alias
        if (
            not (chosen is None or isinstance(chosen, str))
            or not isinstance(annotation, type)
            or issubclass(annotation, BaseModel | list | tuple | set | frozenset | dict)
        ):
            return None
        alias = chosen or field.alias  # the one name a path parameter is read by
        plain.append((field.name, alias, ("path", alias), field))
    return plain


async def _read_body(request: Request) -> Any:
    """The body as FastAPI's handler reads it: parsed if sent as JSON, else the bytes."""
    try:
        raw = await request.body()
        if not raw:
            return PydanticUndefined
        if not _is_json(request.headers.get("content-type")):
            return raw  # validation fails on it; api_service.errors makes that a 415
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problem = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([problem], body=exc.doc) from exc
    except UnicodeDecodeError as exc:
        # FastAPI's handler answers 400 "There was an error parsing the body" here; a
        # body that is not UTF-8 is not JSON, and a body that is not JSON is a 422.
        problem = {
            "type": "json_invalid",
            "loc": ("body", exc.start),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "not UTF-8"},
        }
        raise RequestValidationError([problem], body=None) from exc
    except HTTPException:
        raise  # the body limit's 413
    except Exception as exc:
        raise HTTPException(400, "There was an error parsing the body") from exc


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters: FastAPI's rule."""
    if content_type == "application/json":
        return True
    if not content_type:
        return False
    parsed = email.message.Message()
    parsed["content-type"] = content_type
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
