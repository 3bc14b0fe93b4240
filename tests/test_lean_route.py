"""LeanRoute answers as FastAPI's own handler does, and steps aside where it cannot."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from api_service.errors import install_error_handlers
from api_service.lean_route import LeanRoute, _plain_path_params


class Mail(BaseModel):
    to: str = Field(min_length=3)
    count: int = 1


class Accepted(BaseModel):
    id: str
    count: int


async def caller(request: Request) -> str:
    key = request.headers.get("authorization")
    if key != "Bearer k":
        raise HTTPException(401, "no", headers={"WWW-Authenticate": "Bearer"})
    return "owner"


Caller = Annotated[str, Depends(caller)]
Key = Annotated[str | None, Header(alias="Idempotency-Key", max_length=5, pattern=r"^\w+$")]


def _app(route_class: type[APIRoute]) -> FastAPI:
    router = APIRouter(route_class=route_class)

    @router.post("/mail", status_code=202)
    async def post(
        mail: Mail, who: Caller, request: Request, response: Response, key: Key = None
    ) -> Accepted:
        response.headers["Location"] = f"{request.base_url}x"
        if key == "late":
            response.status_code = 200
        return Accepted(id=f"{who}:{key}", count=mail.count)

    @router.get("/item/{item_id}")
    async def get(item_id: uuid.UUID, who: Caller) -> Accepted:
        if item_id.int == 0:
            raise HTTPException(404, "none")
        return Accepted(id=str(item_id), count=0)

    @router.get("/other/{item-id}")
    async def get_aliased(
        item_id: Annotated[int, Path(alias="item-id", ge=1)], who: Caller
    ) -> Accepted:
        return Accepted(id=who, count=item_id)

    app = FastAPI()
    install_error_handlers(app)
    app.router.routes.extend(router.routes)
    return app


AUTH = {"Authorization": "Bearer k"}
REQUESTS: dict[str, dict[str, Any]] = {
    "ok": {"method": "POST", "url": "/mail", "json": {"to": "abc"}, "headers": AUTH},
    "status set": {
        "method": "POST",
        "url": "/mail",
        "json": {"to": "abc"},
        "headers": {**AUTH, "Idempotency-Key": "late"},
    },
    "no key": {"method": "POST", "url": "/mail", "json": {"to": "abc"}},
    "bad body and header": {
        "method": "POST",
        "url": "/mail",
        "json": {"to": "a", "count": "x"},
        "headers": {**AUTH, "Idempotency-Key": "toolong"},
    },
    "bad json": {
        "method": "POST",
        "url": "/mail",
        "content": b'{"to": ',
        "headers": {**AUTH, "Content-Type": "application/json"},
    },
    "not json": {
        "method": "POST",
        "url": "/mail",
        "content": b'{"to": "abc"}',
        "headers": {**AUTH, "Content-Type": "text/plain"},
    },
    "suffix json": {
        "method": "POST",
        "url": "/mail",
        "content": b'{"to": "abc"}',
        "headers": {**AUTH, "Content-Type": "application/vnd.x+json; charset=utf-8"},
    },
    "empty body": {"method": "POST", "url": "/mail", "content": b"", "headers": AUTH},
    "array body": {"method": "POST", "url": "/mail", "json": [1], "headers": AUTH},
    "get": {"method": "GET", "url": f"/item/{uuid.uuid4()}", "headers": AUTH},
    "get 404": {"method": "GET", "url": f"/item/{uuid.UUID(int=0)}", "headers": AUTH},
    "get bad id": {"method": "GET", "url": "/item/nope", "headers": AUTH},
    "get no key": {"method": "GET", "url": "/item/nope"},
    "aliased path": {"method": "GET", "url": "/other/7", "headers": AUTH},
    "aliased path too small": {"method": "GET", "url": "/other/0", "headers": AUTH},
    "aliased path not a number": {"method": "GET", "url": "/other/x", "headers": AUTH},
    "wrong method": {"method": "PUT", "url": "/mail", "headers": AUTH},
}


@pytest.mark.parametrize("request_", list(REQUESTS.values()), ids=list(REQUESTS))
def test_lean_answers_as_fastapi_does(request_: dict[str, Any]) -> None:
    with TestClient(_app(APIRoute)) as standard, TestClient(_app(LeanRoute)) as lean:
        expected = standard.request(**request_)
        got = lean.request(**request_)
    assert (got.status_code, got.content) == (expected.status_code, expected.content)
    assert sorted(got.headers.items()) == sorted(expected.headers.items())


def sync_dependency(x_tag: Annotated[str, Header()]) -> str:
    return x_tag


def test_a_route_it_does_not_cover_gets_fastapis_handler() -> None:
    router = APIRouter(route_class=LeanRoute)

    @router.get("/tagged")
    async def tagged(tag: Annotated[str, Depends(sync_dependency)]) -> dict[str, str]:
        return {"tag": tag}

    app = FastAPI()
    app.include_router(router)
    (route,) = router.routes
    assert isinstance(route, LeanRoute)
    assert route.get_route_handler().__qualname__ != "_lean_handler.<locals>.handler"
    with TestClient(app) as client:
        assert client.get("/tagged", headers={"X-Tag": "t"}).json() == {"tag": "t"}
        assert client.get("/tagged").status_code == 422


def test_dependency_overrides_are_refused_not_skipped() -> None:
    app = _app(LeanRoute)
    app.dependency_overrides[caller] = lambda: "someone"
    with (
        TestClient(app, raise_server_exceptions=True) as client,
        pytest.raises(RuntimeError, match="dependency_overrides"),
    ):
        client.get(f"/item/{uuid.uuid4()}", headers=AUTH)


def test_plain_path_parameters_are_validated_by_their_fields_alone() -> None:
    """The fast path of the status route (``_plain_path_params``) covers both GET
    routes above, so their answers above came through it."""
    app = _app(LeanRoute)
    routes = [r for r in app.router.routes if isinstance(r, LeanRoute) and r.methods == {"GET"}]
    assert len(routes) == 2
    for route in routes:
        assert _plain_path_params(route.dependant.path_params) is not None
        assert route.get_route_handler().__qualname__ == "_lean_handler.<locals>.handler"
