"""GET /tasks with a million tasks in Redis: latency of a page, and memory per task.

``python -m bench.listing_scale [--tasks N]`` starts its own redis-server (no
persistence) and loads N tasks of one API key the way the API and the worker write
them: the API's own recorder (api_service.submissions: the record and its listing
index entries, one tag of 100 each), then what a worker adds to a delivered task (the
record's attempt fields and Celery's SUCCESS meta), 1 % of them FAILURE instead.
``INFO memory`` is read before and after each step. Then the API (uvicorn) answers
pages: the newest, deep pages by cursor, a tag, a status filter, ``since``; each timed
from this client, one request at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from api_service.auth import fingerprint
from api_service.submissions import Submission, SubmissionRecorder
from api_service.task_index import Cursor
from bench.procs import Proc, start_uvicorn
from devtools.procs import free_port, wait_for
from devtools.redis_binary import find_redis_server
from shared_schemas import records
from shared_schemas.tasks import SEND_EMAIL

API_KEY = "listing-key"
TAGS = 100
GROUP = 500  # submissions per recorder call, as a batch writes them
RESULT_TTL = 7 * 86_400
KWARGS = {"email": {"to": ["a@example.com"], "subject": "s", "body": "b"}}


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def _record(port: int, owner: str, ids: list[str]) -> None:
    client = aioredis.Redis(port=port, decode_responses=True)
    recorder = SubmissionRecorder(client, RESULT_TTL)
    try:
        for start in range(0, len(ids), GROUP):
            await recorder.record(
                [
                    Submission(SEND_EMAIL, KWARGS, task_id, owner, [f"tag-{i % TAGS}"])
                    for i, task_id in enumerate(ids[start : start + GROUP], start)
                ]
            )
    finally:
        await client.aclose()


def _finish(client: redis.Redis, ids: list[str]) -> None:
    """What a worker leaves for a delivered task: its record's attempt fields and
    Celery's meta (the SUCCESS result as the worker stores it; 1 % FAILURE)."""
    now = datetime.now(UTC).isoformat()
    for start in range(0, len(ids), 1000):
        pipe = client.pipeline(transaction=False)
        for i, task_id in enumerate(ids[start : start + 1000], start):
            pipe.hset(
                records.record_key(task_id),
                mapping={"started_at": now, "retries": 0, "attempt": "waiting", "unfinished": 0},
            )
            if i % 100 == 99:
                result: dict[str, Any] = {
                    "exc_type": "PermanentDeliveryError",
                    "exc_message": ["every recipient was refused: 550 5.1.1 No such user"],
                    "exc_module": "worker_service.errors",
                }
                status = "FAILURE"
            else:
                result = {
                    "message_id": f"<{task_id}@example.org>",
                    "accepted": ["a@example.com"],
                    "sent_at": now,
                }
                status = "SUCCESS"
            meta: dict[str, Any] = {
                "status": status,
                "result": result,
                "traceback": None,
                "children": [],
                "date_done": now,
                "task_id": task_id,
            }
            pipe.set(f"celery-task-meta-{task_id}", json.dumps(meta), ex=RESULT_TTL)
        pipe.execute()


def _timed(get: Callable[[], httpx.Response], times: int) -> dict[str, float]:
    latencies = []
    for _ in range(times):
        started = time.perf_counter()
        response = get()
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listing_scale", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="listing-scale-"))
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = Proc("redis", [find_redis_server(), *options, "--dir", str(work)], {}, work)
    client = redis.Redis(port=port, decode_responses=True)
    api: Proc | None = None
    try:
        wait_for(lambda: _pings(client), what="redis-server")
        owner = fingerprint(API_KEY)
        ids = [str(uuid.uuid4()) for _ in range(args.tasks)]
        empty = _used(client)
        started = time.monotonic()
        asyncio.run(_record(port, owner, ids))
        recorded = _used(client)
        load_s = time.monotonic() - started
        _finish(client, ids)
        finished = _used(client)
        index_bytes = client.memory_usage(records.owner_index_key(owner)) or 0
        tag_bytes = sum(
            client.memory_usage(records.tag_index_key(owner, f"tag-{i}")) or 0 for i in range(TAGS)
        )
        record_bytes = client.memory_usage(records.record_key(ids[-1]), samples=0) or 0
        url = f"redis://127.0.0.1:{port}/0"
        env = {
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": url,
            "API_KEYS": API_KEY,
            "RESULT_TTL": str(RESULT_TTL),
            "LOG_LEVEL": "WARNING",
        }
        api, base_url = start_uvicorn("listing-api", "api_service.main:app", env, work)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            # Half-way down the index: a cursor is found by rank, not walked to.
            cases = _cases(http, args.requests, _cursor_at(client, owner, args.tasks // 2))
        report = {
            "tasks": args.tasks,
            "redis": client.info("server")["redis_version"],
            "allocator": client.info("memory").get("mem_allocator"),
            "record_and_index_bytes_per_task": (recorded - empty) / args.tasks,
            "with_worker_fields_and_celery_meta_bytes_per_task": (finished - empty) / args.tasks,
            "owner_index_bytes_per_task": index_bytes / args.tasks,
            "tag_indexes_bytes_per_task": tag_bytes / args.tasks,
            "one_finished_record_bytes": record_bytes,
            "load_seconds_recorder": load_s,
            "pages": cases,
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if api is not None:
            api.stop()
        client.close()
        server.stop()


def _cases(http: httpx.Client, times: int, deep_cursor: str) -> dict[str, dict[str, float]]:
    first = http.get("/tasks", params={"limit": 100}).json()
    assert len(first["tasks"]) == 100, first
    since = first["tasks"][-1]["submitted_at"]
    return {
        "newest 100": _timed(lambda: http.get("/tasks", params={"limit": 100}), times),
        "next page by cursor": _timed(
            lambda: http.get("/tasks", params={"limit": 100, "cursor": first["next_cursor"]}),
            times,
        ),
        "a page half-way down, by cursor": _timed(
            lambda: http.get("/tasks", params={"limit": 100, "cursor": deep_cursor}), times
        ),
        "tag (1 % of tasks)": _timed(
            lambda: http.get("/tasks", params={"limit": 100, "tag": "tag-7"}), times
        ),
        "status=FAILURE (1 %, scans 1,000)": _timed(
            lambda: http.get("/tasks", params={"limit": 100, "status": "FAILURE"}), times
        ),
        "since (the newest 100)": _timed(
            lambda: http.get("/tasks", params={"limit": 100, "since": since}), times
        ),
        "GET /tasks/{id}": _timed(
            lambda: http.get(f"/tasks/{first['tasks'][0]['task_id']}"), times
        ),
    }


def _cursor_at(client: redis.Redis, owner: str, rank: int) -> str:
    """The cursor a page ending at the index's ``rank``-th newest entry hands out."""
    entries: list[tuple[str, float]] = client.zrevrange(  # type: ignore[assignment]
        records.owner_index_key(owner), rank, rank, withscores=True
    )
    ((task_id, score),) = entries
    return Cursor(int(score), task_id).encode()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


if __name__ == "__main__":
    sys.exit(main())
