"""Bad requests get a precise 4xx and change nothing: no task enqueued, no record kept.

These run against an API whose Redis database no worker reads, so anything it
enqueued would still be there to see.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from api_service.settings import ApiSettings
from tests.conftest import API_KEY, OTHER_API_KEY, QuietApi, Stack

pytestmark = pytest.mark.integration

# MAX_REQUEST_BYTES is not set for these APIs: its default holds (the attachments' limit).
DEFAULT_MAX_REQUEST_BYTES: int = ApiSettings.model_fields["max_request_bytes"].default
VALID: dict[str, Any] = {"to": "alice@example.com", "subject": "Hi", "body": "Hello"}


def _with(**changes: Any) -> dict[str, Any]:
    payload = {**VALID, **changes}
    return {key: value for key, value in payload.items() if value is not ...}


BAD_PAYLOADS = {
    "invalid address": (_with(to="not-an-address"), ["body", "to", 0]),
    "address smuggling a header": (
        _with(to="alice@example.com\r\nBcc: eve@example.com"),
        ["body", "to", 0],
    ),
    "invalid cc": (_with(cc=["bob@example.com", "bob@"]), ["body", "cc", 1]),
    "special-use domain not allowed": (_with(to="alice@printer.local"), ["body", "to", 0]),
    "display name with NUL": (_with(cc=['"Eve\x00" <eve@example.com>']), ["body", "cc", 0]),
    "display name as an encoded word": (
        _with(reply_to="=?utf-8?q?a=0D=0ABcc=3A_eve?= <x@example.com>"),
        ["body", "reply_to"],
    ),
    "invalid reply_to": (_with(reply_to="x@y@z"), ["body", "reply_to"]),
    "missing to": (_with(to=...), ["body", "to"]),
    "empty to": (_with(to=[]), ["body", "to"]),
    "too many recipients": (
        _with(
            to=[f"user{i}@example.com" for i in range(30)],
            bcc=[f"bcc{i}@example.com" for i in range(21)],
        ),
        ["body"],
    ),
    "subject with CRLF": (_with(subject="Hi\r\nBcc: eve@example.com"), ["body", "subject"]),
    "subject with LF": (_with(subject="Hi\nthere"), ["body", "subject"]),
    "empty subject": (_with(subject=""), ["body", "subject"]),
    "subject too long": (_with(subject="x" * 999), ["body", "subject"]),
    "missing body": (_with(body=...), ["body", "body"]),
    "html not text": (_with(html=["<p>"]), ["body", "html"]),
    "unknown field": (_with(too="bob@example.com"), ["body", "too"]),
}


@pytest.mark.parametrize(
    ("payload", "loc"), list(BAD_PAYLOADS.values()), ids=list(BAD_PAYLOADS.keys())
)
def test_invalid_email_is_refused_with_its_location(
    quiet_api: QuietApi, payload: dict[str, Any], loc: list[Any]
) -> None:
    with quiet_api.client() as client:
        response = client.post("/send-email", json=payload)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(error["loc"] == loc for error in errors), errors
    assert all(error["msg"] for error in errors)
    assert quiet_api.redis.dbsize() == 0, "a refused request left something in Redis"


def test_too_many_recipients_message_names_the_limit(quiet_api: QuietApi) -> None:
    payload = _with(to=[f"user{i}@example.com" for i in range(51)])
    with quiet_api.client() as client:
        response = client.post("/send-email", json=payload)
    assert response.status_code == 422
    assert "at most 50 recipients" in response.text


def test_malformed_json_is_refused(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.post(
            "/send-email", content=b'{"to": ', headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422
    assert quiet_api.redis.dbsize() == 0


def test_a_body_that_is_not_utf8_is_refused_as_not_json(quiet_api: QuietApi) -> None:
    before = set(quiet_api.redis.keys("*"))
    with quiet_api.client() as client:
        response = client.post(
            "/send-email", content=b"\xff", headers={"Content-Type": "application/json"}
        )
    # FastAPI's own answer to a body it cannot decode (documented in the OpenAPI).
    assert response.status_code == 400
    assert "parsing the body" in response.json()["detail"]
    assert set(quiet_api.redis.keys("*")) == before


def test_an_empty_body_is_refused_as_missing(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.post("/send-email", content=b"")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert quiet_api.redis.dbsize() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_sent_as_json_is_415(quiet_api: QuietApi, content_type: str | None) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {API_KEY}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with httpx.Client(base_url=quiet_api.base_url, headers=headers) as client:
        response = client.post("/send-email", content=json.dumps(VALID).encode())
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert quiet_api.redis.dbsize() == 0


def test_json_with_parameters_or_a_json_suffix_is_accepted(quiet_api: QuietApi) -> None:
    try:
        with quiet_api.client() as client:
            for content_type in ("application/json; charset=utf-8", "application/vnd.mail+json"):
                response = client.post(
                    "/send-email",
                    content=json.dumps(VALID).encode(),
                    headers={"Content-Type": content_type},
                )
                assert response.status_code == 202, (content_type, response.text)
        assert quiet_api.redis.llen("email") == 2
    finally:
        quiet_api.redis.flushdb()


def test_header_and_body_errors_come_in_one_answer(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.post(
            "/send-email", json=_with(to="nope"), headers={"Idempotency-Key": "x" * 256}
        )
    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert locs == [["header", "Idempotency-Key"], ["body", "to", 0]]
    assert "nope" not in response.text, "the input was echoed back"
    assert quiet_api.redis.dbsize() == 0


def test_oversized_body_is_413(quiet_api: QuietApi) -> None:
    huge = _with(body="x" * (DEFAULT_MAX_REQUEST_BYTES + 1))
    with quiet_api.client() as client:
        response = client.post("/send-email", json=huge)
    assert response.status_code == 413
    # JSON like every other error, though it is answered before the body is read.
    assert "MAX_REQUEST_BYTES" in response.json()["detail"]
    assert quiet_api.redis.dbsize() == 0


def test_oversized_streamed_body_without_length_is_413(quiet_api: QuietApi) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"to": "alice@example.com", "subject": "Hi", "body": "'
        for _ in range(DEFAULT_MAX_REQUEST_BYTES // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    with quiet_api.client() as client:
        response = client.post(
            "/send-email", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert "MAX_REQUEST_BYTES" in response.json()["detail"]
    assert quiet_api.redis.dbsize() == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
    ],
    ids=["missing", "wrong key", "basic scheme", "no scheme"],
)
def test_missing_or_wrong_key_is_401_on_both_endpoints(
    quiet_api: QuietApi, headers: dict[str, str]
) -> None:
    import httpx

    with httpx.Client(base_url=quiet_api.base_url, headers=headers) as client:
        post = client.post("/send-email", json=VALID)
        get = client.get(f"/task-status/{uuid.uuid4()}")
    for response in (post, get):
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert quiet_api.redis.dbsize() == 0


def test_unknown_task_id_is_404(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.get(f"/task-status/{uuid.uuid4()}")
    assert response.status_code == 404


def test_malformed_task_id_is_422(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.get("/task-status/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


def test_accepted_task_without_a_worker_stays_pending_and_is_queued(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.post("/send-email", json=VALID)
        assert response.status_code == 202
        task_id = response.json()["task_id"]
        status = client.get(f"/task-status/{task_id}").json()
    try:
        assert status["status"] == "PENDING"
        assert status["started_at"] is None
        assert status["result"] is None
        assert quiet_api.redis.llen("email") == 1, "the 202 came before the broker had it"
        message = json.loads(quiet_api.redis.lindex("email", 0) or b"null")
        headers = message["headers"]
        assert (headers["task"], headers["id"]) == ("email.send", task_id)
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert kwargs["email"]["subject"] == VALID["subject"]
        # What Flower and `celery inspect` show: the shape, not the mail.
        assert headers["kwargsrepr"] == "{'email': '<QueuedEmail>'}"
        assert headers["argsrepr"] == "()"
    finally:
        quiet_api.redis.flushdb()


def test_a_task_is_invisible_to_other_keys(stack: Stack) -> None:
    with stack.client() as owner, stack.client(OTHER_API_KEY) as other:
        task_id = owner.post("/send-email", json=VALID).json()["task_id"]
        assert owner.get(f"/task-status/{task_id}").status_code == 200
        assert other.get(f"/task-status/{task_id}").status_code == 404


def test_health_and_openapi_with_examples(quiet_api: QuietApi) -> None:
    import httpx

    with httpx.Client(base_url=quiet_api.base_url) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
    post = spec["paths"]["/send-email"]["post"]
    get = spec["paths"]["/task-status/{task_id}"]["get"]
    assert "202" in post["responses"]
    assert spec["components"]["schemas"]["SendEmailRequest"]["examples"]
    assert spec["components"]["schemas"]["TaskAccepted"]["examples"]
    assert get["responses"]["200"]["content"]["application/json"]["example"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SendEmailRequest"}
    assert spec["components"]["schemas"]["SendEmailRequest"]["properties"]["to"]
    (header,) = post["parameters"]
    assert (header["name"], header["in"], header["required"]) == (
        "Idempotency-Key",
        "header",
        False,
    )
    (key, _null) = header["schema"]["anyOf"]
    assert key["maxLength"] == 255
    (path,) = get["parameters"]
    assert (path["name"], path["in"], path["schema"]["format"]) == ("task_id", "path", "uuid")
    # Every answer a client can get, with its headers.
    assert set(post["responses"]) == {"202", "400", "401", "409", "413", "415", "422", "429", "503"}
    assert set(get["responses"]) == {"200", "401", "404", "422", "502", "503"}
    assert set(post["responses"]["202"]["headers"]) == {"Location", "Idempotent-Replayed"}
    assert set(post["responses"]["429"]["headers"]) == {"Retry-After"}
    for operation in (post, get):
        assert set(operation["responses"]["401"]["headers"]) == {"WWW-Authenticate"}
        assert set(operation["responses"]["503"]["headers"]) == {"Retry-After"}
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    for operation in (post, get):
        assert operation["security"] == [{"HTTPBearer": []}]
        problems = operation["responses"]["422"]["content"]["application/json"]["schema"]
        assert problems == {"$ref": "#/components/schemas/InvalidInput"}
