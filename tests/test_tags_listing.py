"""Tags and metadata on a task, and GET /tasks: the caller's tasks, newest first."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from api_service.submissions import Submission, SubmissionRecorder
from api_service.task_index import TaskIndex
from api_service.task_store import TaskStore
from shared_schemas import records
from shared_schemas.tasks import SEND_EMAIL
from tests.conftest import OTHER_API_KEY, QuietApi, Stack
from tests.procs import RedisServer
from tests.smtp_sink import REFUSED_PREFIX
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration


def _mail(label: str, **extra: Any) -> dict[str, Any]:
    return {
        "to": f"list-{uuid.uuid4().hex[:8]}@example.com",
        "subject": f"listing {label}",
        "body": "b",
        **extra,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _all_pages(client: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every task the listing gives for ``params``, following the cursors; and the
    number of pages it took."""
    tasks: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/tasks", params=query)
        assert response.status_code == 200, response.text
        pages += 1
        tasks += response.json()["tasks"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return tasks, pages


def test_tags_and_metadata_come_back_in_status_listing_and_tasks_route(stack: Stack) -> None:
    tag = f"campaign-{uuid.uuid4().hex[:8]}"
    metadata = {"order_id": "A-1042", "customer": "Zoë <c_77>", "empty": ""}
    with stack.client() as client:
        accepted = client.post(
            "/send-email", json=_mail("labels", tags=[tag, "eu"], metadata=metadata)
        )
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        pending = client.get(f"/task-status/{task_id}").json()
        assert (pending["tags"], pending["metadata"]) == ([tag, "eu"], metadata)
        done = wait_until_finished(client, task_id)
        assert done["status"] == "SUCCESS"
        assert (done["tags"], done["metadata"]) == ([tag, "eu"], metadata)
        page = client.get("/tasks", params={"tag": tag}).json()
        assert [task["task_id"] for task in page["tasks"]] == [task_id]
        assert page["tasks"][0] == done
        assert page["next_cursor"] is None
        # GET /tasks/{id} answers as GET /task-status/{id} does, byte for byte.
        one = client.get(f"/tasks/{task_id}")
        assert one.status_code == 200
        assert one.content == client.get(f"/task-status/{task_id}").content
    # A task without labels reads them as empty.
    with stack.client() as client:
        plain = client.post("/send-email", json=_mail("plain")).json()["task_id"]
        status = client.get(f"/task-status/{plain}").json()
    assert (status["tags"], status["metadata"]) == ([], {})


_TOO_MANY_TAGS = [f"t{i}" for i in range(11)]
_TOO_MANY_KEYS = {f"k{i}": "v" for i in range(21)}


@pytest.mark.parametrize(
    ("labels", "loc", "says"),
    [
        ({"tags": _TOO_MANY_TAGS}, ["body", "tags"], "at most 10"),
        ({"tags": ["x" * 65]}, ["body", "tags", 0], "at most 64"),
        ({"tags": ["ok", ""]}, ["body", "tags", 1], "at least 1"),
        ({"tags": ["a\nb"]}, ["body", "tags", 0], "control characters"),
        ({"tags": ["dup", "dup"]}, ["body", "tags"], "once"),
        ({"tags": "one"}, ["body", "tags"], "list"),
        ({"metadata": _TOO_MANY_KEYS}, ["body", "metadata"], "at most 20"),
        ({"metadata": {"k" * 65: "v"}}, ["body", "metadata", "k" * 65, "[key]"], "at most 64"),
        ({"metadata": {"": "v"}}, ["body", "metadata", "", "[key]"], "at least 1"),
        ({"metadata": {"k": "v" * 257}}, ["body", "metadata", "k"], "at most 256"),
        ({"metadata": {"k": 7}}, ["body", "metadata", "k"], "string"),
        ({"metadata": {"k": "\x1b[31m"}}, ["body", "metadata", "k"], "control characters"),
        ({"metadata": ["k", "v"]}, ["body", "metadata"], "dictionary"),
    ],
)
def test_labels_past_their_limits_are_422_and_queue_nothing(
    quiet_api: QuietApi, labels: dict[str, Any], loc: list[Any], says: str
) -> None:
    with quiet_api.client() as client:
        response = client.post("/send-email", json=_mail("limits", **labels))
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"] == loc
    assert says in problem["msg"]
    assert quiet_api.redis.dbsize() == 0, "a refused request left something in Redis"


def test_labels_at_their_limits_are_accepted(quiet_api: QuietApi) -> None:
    tags = [f"{i}" * 64 for i in range(10)]
    metadata = {f"{i:02d}".ljust(64, "k"): "v" * 256 for i in range(20)}
    try:
        with quiet_api.client() as client:
            response = client.post("/send-email", json=_mail("max", tags=tags, metadata=metadata))
            assert response.status_code == 202, response.text
            status = client.get(f"/tasks/{response.json()['task_id']}").json()
        assert (status["tags"], status["metadata"]) == (tags, metadata)
    finally:
        quiet_api.redis.flushdb()


def test_listing_is_newest_first_and_pages_with_a_cursor(stack: Stack) -> None:
    since = _now()
    with stack.client() as client:
        ids = [
            client.post("/send-email", json=_mail(f"page {i}")).json()["task_id"] for i in range(7)
        ]
        first = client.get("/tasks", params={"since": since, "limit": 3}).json()
        assert [task["task_id"] for task in first["tasks"]] == ids[::-1][:3]
        assert first["next_cursor"]
        listed, pages = _all_pages(client, since=since, limit=3)
        # Newer tasks since the first page do not shift the pages that follow.
        client.post("/send-email", json=_mail("late"))
        second = client.get(
            "/tasks", params={"since": since, "limit": 3, "cursor": first["next_cursor"]}
        ).json()
    assert [task["task_id"] for task in listed] == ids[::-1]
    assert pages == 3
    assert [task["task_id"] for task in second["tasks"]] == ids[::-1][3:6]


def test_listing_filters_by_status_tag_and_since(stack: Stack) -> None:
    tag = f"f-{uuid.uuid4().hex[:8]}"
    since = _now()
    refused = f"{REFUSED_PREFIX}{uuid.uuid4().hex[:8]}@example.com"
    with stack.client() as client:
        ok = client.post("/send-email", json=_mail("ok", tags=[tag])).json()["task_id"]
        bad = client.post("/send-email", json={**_mail("bad", tags=[tag]), "to": refused})
        bad_id = bad.json()["task_id"]
        untagged = client.post("/send-email", json=_mail("untagged")).json()["task_id"]
        for task_id in (ok, bad_id, untagged):
            wait_until_finished(client, task_id)

        def ids(**params: Any) -> list[str]:
            return [task["task_id"] for task in _all_pages(client, **params)[0]]

        assert ids(tag=tag) == [bad_id, ok]
        assert ids(since=since) == [untagged, bad_id, ok]
        assert ids(since=since, status="FAILURE") == [bad_id]
        assert ids(tag=tag, status="SUCCESS") == [ok]
        assert ids(tag=tag, status="PENDING") == []
        assert ids(tag=f"{tag}-none") == []
        later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        assert ids(since=later) == []
        # Every listed task reads as its own status does.
        for task in _all_pages(client, since=since)[0]:
            assert task == client.get(f"/task-status/{task['task_id']}").json()


def test_another_keys_tasks_are_invisible(stack: Stack) -> None:
    tag = f"mine-{uuid.uuid4().hex[:8]}"
    since = _now()
    with stack.client() as mine, stack.client(OTHER_API_KEY) as other:
        task_id = mine.post("/send-email", json=_mail("mine", tags=[tag])).json()["task_id"]
        assert [t["task_id"] for t in mine.get("/tasks", params={"tag": tag}).json()["tasks"]] == [
            task_id
        ]
        assert other.get("/tasks", params={"tag": tag}).json() == {
            "tasks": [],
            "next_cursor": None,
        }
        theirs = other.get("/tasks", params={"since": since}).json()["tasks"]
        assert task_id not in [task["task_id"] for task in theirs]
        assert other.get(f"/tasks/{task_id}").status_code == 404
        assert mine.get(f"/tasks/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 101}, ["query", "limit"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"status": "DONE"}, ["query", "status"]),
        ({"tag": "x" * 65}, ["query", "tag"]),
        ({"since": "yesterday"}, ["query", "since"]),
        ({"since": "2026-01-01T00:00:00"}, ["query", "since"]),  # no time zone
        ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
        ({"cursor": "MTIzOmFiYw"}, ["query", "cursor"]),  # "123:abc": no task id
    ],
)
def test_bad_listing_parameters_are_422(
    quiet_api: QuietApi, params: dict[str, Any], loc: list[str]
) -> None:
    with quiet_api.client() as client:
        response = client.get("/tasks", params=params)
    assert response.status_code == 422, response.text
    assert [problem["loc"] for problem in response.json()["detail"]] == [loc]
    assert quiet_api.redis.dbsize() == 0


def test_listing_needs_a_key_and_a_malformed_id_is_422(quiet_api: QuietApi) -> None:
    with httpx.Client(base_url=quiet_api.base_url) as anonymous:
        assert anonymous.get("/tasks").status_code == 401
        assert anonymous.get(f"/tasks/{uuid.uuid4()}").status_code == 401
    with quiet_api.client() as client:
        response = client.get("/tasks/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


def test_index_entries_past_the_ttl_are_pruned_on_write(redis_server: RedisServer) -> None:
    """The index never outgrows the records: each write drops its indexes' entries
    older than the records' TTL, and the index expires with its last record."""
    db = 14

    async def scenario() -> None:
        client = aioredis.Redis(port=redis_server.port, db=db, decode_responses=True)
        try:
            recorder = SubmissionRecorder(client, result_ttl=60)
            owner = uuid.uuid4().hex
            index = records.owner_index_key(owner)
            tagged = records.tag_index_key(owner, "t")
            stale = 1_000_000  # a microsecond score from 1970
            await client.zadd(index, {"stale": stale})
            await client.zadd(tagged, {"stale": stale})
            task_id = str(uuid.uuid4())
            await recorder.record([Submission(SEND_EMAIL, {}, task_id, owner, ["t"], {"k": "v"})])
            assert await client.zrange(index, 0, -1) == [task_id]
            assert await client.zrange(tagged, 0, -1) == [task_id]
            assert 0 < await client.ttl(index) <= 60
            assert 0 < await client.ttl(tagged) <= 60
            record = await client.hgetall(records.record_key(task_id))
            assert (record["tags"], record["metadata"]) == ('["t"]', '{"k":"v"}')
        finally:
            await client.flushdb()
            await client.aclose()

    asyncio.run(scenario())


def test_a_cursor_whose_entry_was_pruned_goes_on_from_its_score(
    redis_server: RedisServer,
) -> None:
    db = 14

    async def scenario() -> None:
        client = aioredis.Redis(port=redis_server.port, db=db, decode_responses=True)
        try:
            owner = uuid.uuid4().hex
            ids = [str(uuid.uuid4()) for _ in range(4)]
            await SubmissionRecorder(client, result_ttl=60).record(
                [Submission(SEND_EMAIL, {}, task_id, owner) for task_id in ids]
            )
            index = TaskIndex(client, TaskStore(client))
            first = await index.page(owner, 2)
            assert [task.task_id for task in first.tasks] == [ids[3], ids[2]]
            assert first.next_cursor is not None
            await client.zrem(records.owner_index_key(owner), ids[2])
            rest = await index.page(owner, 2, after=first.next_cursor)
            assert [task.task_id for task in rest.tasks] == [ids[1], ids[0]]
            # Its record gone (expired), a listed entry is skipped.
            await client.delete(records.record_key(ids[1]))
            again = await index.page(owner, 5)
            assert [task.task_id for task in again.tasks] == [ids[3], ids[0]]
            assert again.next_cursor is None
        finally:
            await client.flushdb()
            await client.aclose()

    asyncio.run(scenario())
