"""POST /send-email/batch: 1-500 mails in one request, all or nothing; GET /batches/{id}."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared_schemas.tasks import EMAIL_QUEUE
from tests.conftest import API_KEY, OTHER_API_KEY, QuietApi, Stack, service_env
from tests.procs import RedisServer, start_api, wait_for
from tests.smtp_sink import REFUSED_PREFIX, SmtpSink
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration

LIMITED_DB = 15


def _mail(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "to": f"batch-{uuid.uuid4().hex[:8]}@example.com",
        "subject": f"batch mail {i} {uuid.uuid4().hex[:6]}",
        "body": f"mail number {i}",
        **extra,
    }


def _queued_ids(quiet_api: QuietApi) -> list[str]:
    raw = quiet_api.redis.lrange(EMAIL_QUEUE, 0, -1)
    return [json.loads(message)["headers"]["id"] for message in reversed(raw)]


def test_a_batch_of_three_is_delivered_in_order_and_its_progress_counts(stack: Stack) -> None:
    tag = f"b-{uuid.uuid4().hex[:8]}"
    messages = [_mail(i, tags=[tag], metadata={"n": str(i)}) for i in range(3)]
    with stack.client() as client:
        response = client.post("/send-email/batch", json={"messages": messages})
        assert response.status_code == 202, response.text
        accepted = response.json()
        batch_id, task_ids = accepted["batch_id"], accepted["task_ids"]
        assert len(task_ids) == len(set(task_ids)) == 3
        assert accepted["status_url"].endswith(f"/batches/{batch_id}")
        assert response.headers["Location"] == accepted["status_url"]
        for i, task_id in enumerate(task_ids):
            status = wait_until_finished(client, task_id)
            assert status["status"] == "SUCCESS"
            assert (status["tags"], status["metadata"]) == ([tag], {"n": str(i)})
            (received,) = stack.smtp.received_by(messages[i]["to"])
            assert received.message["Subject"] == messages[i]["subject"]
        progress = client.get(f"/batches/{batch_id}").json()
        # The batch's tasks list as any others, in the order they were given.
        listed = client.get("/tasks", params={"tag": tag}).json()["tasks"]
    assert [task["task_id"] for task in listed] == task_ids[::-1]
    assert progress["batch_id"] == batch_id
    assert progress["total"] == 3
    assert progress["counts"] == {
        "PENDING": 0,
        "SCHEDULED": 0,
        "STARTED": 0,
        "RETRY": 0,
        "SUCCESS": 3,
        "FAILURE": 0,
        "REVOKED": 0,
    }
    assert (progress["finished"], progress["fraction_finished"]) == (3, 1.0)


def test_progress_counts_each_status_as_the_batch_goes(quiet_api: QuietApi, stack: Stack) -> None:
    refused = f"{REFUSED_PREFIX}{uuid.uuid4().hex[:8]}@example.com"
    messages = [_mail(0), {**_mail(1), "to": refused}, _mail(2), _mail(3)]
    with stack.client() as client:
        batch = client.post("/send-email/batch", json={"messages": messages}).json()

        def all_finished() -> bool:
            progress = client.get(f"/batches/{batch['batch_id']}").json()
            return bool(progress["finished"] == 4)

        wait_for(all_finished, what="the batch to finish")
        progress = client.get(f"/batches/{batch['batch_id']}").json()
    assert (progress["counts"]["SUCCESS"], progress["counts"]["FAILURE"]) == (3, 1)
    assert progress["fraction_finished"] == 1.0
    # Without a worker, nothing moves: all PENDING, nothing finished.
    try:
        with quiet_api.client() as client:
            queued = client.post("/send-email/batch", json={"messages": messages}).json()
            waiting = client.get(f"/batches/{queued['batch_id']}").json()
        assert waiting["counts"]["PENDING"] == 4
        assert (waiting["finished"], waiting["fraction_finished"]) == (0, 0.0)
        assert _queued_ids(quiet_api) == queued["task_ids"]
    finally:
        quiet_api.redis.flushdb()


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (
            {"messages": [_mail(0), _mail(1), _mail(2), {**_mail(3), "to": ["nope"]}, _mail(4)]},
            ["body", "messages", 3, "to", 0],
        ),
        (
            {"messages": [_mail(0), {**_mail(1), "tags": ["x"] * 2}]},
            ["body", "messages", 1, "tags"],
        ),
        ({"messages": [{**_mail(0), "surprise": 1}]}, ["body", "messages", 0, "surprise"]),
        ({"messages": []}, ["body", "messages"]),
        ({"messages": [_mail(0)] * 501}, ["body", "messages"]),
        ({"messages": _mail(0)}, ["body", "messages"]),
        ({}, ["body", "messages"]),
        ({"messages": [_mail(0)], "extra": True}, ["body", "extra"]),
    ],
)
def test_a_bad_batch_is_422_naming_the_message_and_queues_nothing(
    quiet_api: QuietApi, body: dict[str, Any], loc: list[Any]
) -> None:
    with quiet_api.client() as client:
        response = client.post("/send-email/batch", json=body)
    assert response.status_code == 422, response.text
    assert [problem["loc"] for problem in response.json()["detail"]] == [loc]
    assert quiet_api.redis.dbsize() == 0, "a refused batch left something in Redis"


def test_every_bad_message_is_reported_at_once(quiet_api: QuietApi) -> None:
    messages = [_mail(0), {**_mail(1), "subject": ""}, _mail(2), {**_mail(3), "to": "x"}]
    with quiet_api.client() as client:
        response = client.post(
            "/send-email/batch", json={"messages": messages}, headers={"Idempotency-Key": "a b"}
        )
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [
        ["header", "Idempotency-Key"],
        ["body", "messages", 1, "subject"],
        ["body", "messages", 3, "to", 0],
    ]
    assert quiet_api.redis.dbsize() == 0


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_a_batch_not_sent_as_json_is_415(quiet_api: QuietApi, content_type: str | None) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with httpx.Client(base_url=quiet_api.base_url, headers=headers) as client:
        body = json.dumps({"messages": [_mail(0)]}).encode()
        response = client.post("/send-email/batch", content=body)
        assert client.post("/send-email/batch", content=b"{").status_code == 415
    assert response.status_code == 415
    assert quiet_api.redis.dbsize() == 0


def test_a_malformed_batch_body_is_422(quiet_api: QuietApi) -> None:
    with quiet_api.client() as client:
        response = client.post(
            "/send-email/batch", content=b"{", headers={"Content-Type": "application/json"}
        )
        empty = client.post(
            "/send-email/batch", content=b"", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == empty.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert empty.json()["detail"][0]["loc"] == ["body"]
    assert quiet_api.redis.dbsize() == 0


def test_a_batch_without_a_key_is_401(quiet_api: QuietApi) -> None:
    with httpx.Client(base_url=quiet_api.base_url) as client:
        response = client.post("/send-email/batch", json={"messages": [_mail(0)]})
        assert client.get(f"/batches/{uuid.uuid4()}").status_code == 401
    assert response.status_code == 401
    assert quiet_api.redis.dbsize() == 0


def test_idempotency_key_replays_the_batch_and_queues_it_once(quiet_api: QuietApi) -> None:
    messages = [_mail(i) for i in range(5)]
    headers = {"Idempotency-Key": f"batch-{uuid.uuid4()}"}
    try:
        with quiet_api.client() as client:
            first = client.post("/send-email/batch", json={"messages": messages}, headers=headers)
            again = client.post("/send-email/batch", json={"messages": messages}, headers=headers)
            clash = client.post(
                "/send-email/batch", json={"messages": messages[:4]}, headers=headers
            )
            single = client.post("/send-email", json=messages[0], headers=headers)
        assert first.status_code == again.status_code == 202
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["Location"] == first.headers["Location"]
        assert clash.status_code == single.status_code == 409
        assert _queued_ids(quiet_api) == first.json()["task_ids"]
    finally:
        quiet_api.redis.flushdb()


def test_unknown_or_another_keys_batch_is_404(quiet_api: QuietApi) -> None:
    try:
        with quiet_api.client() as mine, quiet_api.client(OTHER_API_KEY) as other:
            batch_id = mine.post("/send-email/batch", json={"messages": [_mail(0)]}).json()[
                "batch_id"
            ]
            assert mine.get(f"/batches/{batch_id}").status_code == 200
            assert other.get(f"/batches/{batch_id}").status_code == 404
            assert mine.get(f"/batches/{uuid.uuid4()}").status_code == 404
            malformed = mine.get("/batches/not-a-uuid")
        assert malformed.status_code == 422
        assert malformed.json()["detail"][0]["loc"] == ["path", "batch_id"]
    finally:
        quiet_api.redis.flushdb()


def test_openapi_documents_the_new_routes_with_examples(quiet_api: QuietApi) -> None:
    with httpx.Client(base_url=quiet_api.base_url) as client:
        spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    post = spec["paths"]["/send-email/batch"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schemas[ref.rsplit("/", 1)[1]]
    assert body["properties"]["messages"]["items"] == {
        "$ref": "#/components/schemas/SendEmailRequest"
    }
    assert body["properties"]["messages"]["maxItems"] == 500
    assert body["examples"]
    assert schemas["BatchAccepted"]["examples"]
    assert schemas["BatchProgress"]["examples"]
    assert schemas["TaskPage"]["examples"]
    assert post["responses"]["422"]["content"]["application/json"]["example"]
    assert schemas["SendEmailRequest"]["properties"]["tags"]["maxItems"] == 10
    assert schemas["SendEmailRequest"]["properties"]["metadata"]["maxProperties"] == 20
    listing = spec["paths"]["/tasks"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "limit",
        "cursor",
        "status",
        "tag",
        "since",
    }
    for operation in (post, listing, spec["paths"]["/batches/{batch_id}"]["get"]):
        assert operation["security"] == [{"HTTPBearer": []}]
    # Every reference resolves.
    refs = {ref for ref in _refs(spec) if ref.startswith("#/components/schemas/")}
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(schemas)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.fixture(scope="module")
def limited_api(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> Iterator[tuple[str, redis.Redis]]:
    env = {
        **service_env(redis_server, smtp, db=LIMITED_DB),
        "RATE_LIMIT_PER_MINUTE": "5",
        "MAX_BATCH_REQUEST_BYTES": "4096",
    }
    api, base_url = start_api(env, log_dir, name="batch-limited-api")
    queue = redis.Redis(port=redis_server.port, db=LIMITED_DB)
    yield base_url, queue
    queue.close()
    api.stop()


def test_each_mail_of_a_batch_counts_against_the_rate_limit(
    limited_api: tuple[str, redis.Redis],
) -> None:
    base_url, queue = limited_api
    try:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
            assert c.post("/send-email/batch", json={"messages": [_mail(0)] * 4}).status_code == 202
            over = c.post("/send-email/batch", json={"messages": [_mail(1)] * 2})
        assert over.status_code == 429
        assert int(over.headers["Retry-After"]) >= 1
        assert queue.llen(EMAIL_QUEUE) == 4, "a refused batch was queued"
    finally:
        queue.flushdb()


def test_a_batch_over_max_batch_request_bytes_is_413(limited_api: tuple[str, redis.Redis]) -> None:
    base_url, queue = limited_api
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        response = c.post("/send-email/batch", json={"messages": [_mail(0, body="x" * 5000)]})
    assert response.status_code == 413
    assert queue.dbsize() == 0
