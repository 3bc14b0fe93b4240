"""A mail's attachments are stored once beside its task message (shared_schemas.stored_content)
and live as long as the task can still run: there while queued, through a retry, gone when
it succeeds or fails for good. A mail whose stored attachments are gone fails, unsent."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import httpx
import pytest

from shared_schemas.stored_content import content_key
from shared_schemas.tasks import EMAIL_QUEUE
from tests.conftest import QuietApi, Stack
from tests.procs import wait_for
from tests.smtp_sink import REFUSED_PREFIX
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration

RESULT_TTL = 86_400  # the services' default (tests/conftest.py sets none)


def mail_with_files(to: str, *files: bytes) -> dict[str, Any]:
    return {
        "to": to,
        "subject": f"Files {uuid.uuid4().hex[:8]}",
        "body": "Files attached.",
        "attachments": [
            {"filename": f"file-{i}.bin", "content": base64.b64encode(data).decode()}
            for i, data in enumerate(files)
        ],
    }


def submit(client: httpx.Client, payload: dict[str, Any]) -> str:
    response = client.post("/send-email", json=payload)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def test_queued_mail_carries_a_reference_and_its_files_are_stored_once(
    quiet_api: QuietApi,
) -> None:
    big, small = os.urandom(2 * 1024 * 1024), b"a small file"
    try:
        with quiet_api.client() as client:
            task_id = submit(client, mail_with_files("a@example.com", big, small))
        redis = quiet_api.redis
        key = content_key(task_id)
        assert redis.hmget(key, ["0", "1"]) == [big, small]
        assert 0 < redis.ttl(key) <= RESULT_TTL
        # The message names the files; their bytes are not in it.
        entry = redis.lindex(EMAIL_QUEUE, 0)
        assert entry is not None
        assert len(entry) < 4096
        message = json.loads(entry)
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ref = kwargs["email"]["content_ref"]
        assert ref["key"] == key
        assert [a["size"] for a in ref["attachments"]] == [len(big), len(small)]
    finally:
        quiet_api.redis.flushdb()


def test_stored_files_are_deleted_with_the_success(stack: Stack) -> None:
    to = f"stored-{uuid.uuid4().hex[:8]}@example.com"
    data = os.urandom(300_000)
    stall = stack.smtp.stall_at_rcpt(to)
    try:
        with stack.client() as client:
            task_id = submit(client, mail_with_files(to, data))
            wait_for(lambda: stall.waiting == 1, what="the attempt to reach RCPT")
            assert stack.redis.client.exists(content_key(task_id)) == 1
            stall.release.set()
            status = wait_until_finished(client, task_id)
    finally:
        stall.release.set()
    assert status["status"] == "SUCCESS", status
    # Deleted in the same script that stored the SUCCESS.
    assert stack.redis.client.exists(content_key(task_id)) == 0
    [received] = stack.smtp.received_by(to)
    assert [part.get_content() for part in received.message.iter_attachments()] == [data]


def test_stored_files_survive_a_retry_and_arrive_intact(stack: Stack) -> None:
    to = f"retried-{uuid.uuid4().hex[:8]}@example.com"
    files = (os.urandom(500_000), os.urandom(10))
    first = stack.smtp.stall_at_rcpt(to)
    stack.smtp.reply_to_rcpt(to, "451 4.3.0 Try again later")
    second = None
    try:
        with stack.client() as client:
            task_id = submit(client, mail_with_files(to, *files))
            wait_for(lambda: first.waiting == 1, what="the first attempt to reach RCPT")
            # Hold the next attempt too, then let the first one fail with the 451.
            second = stack.smtp.stall_at_rcpt(to)
            first.release.set()
            wait_for(lambda: second.waiting == 1, what="the retry to reach RCPT")
            assert client.get(f"/task-status/{task_id}").json()["retries"] == 1
            assert stack.redis.client.exists(content_key(task_id)) == 1
            second.release.set()
            status = wait_until_finished(client, task_id)
    finally:
        first.release.set()
        if second is not None:
            second.release.set()
    assert status["status"] == "SUCCESS", status
    assert status["retries"] == 1
    assert stack.redis.client.exists(content_key(task_id)) == 0
    [received] = stack.smtp.received_by(to)
    assert [p.get_content() for p in received.message.iter_attachments()] == list(files)


def test_stored_files_are_deleted_when_the_mail_fails_for_good(stack: Stack) -> None:
    to = f"{REFUSED_PREFIX}{uuid.uuid4().hex[:8]}@example.com"
    with stack.client() as client:
        task_id = submit(client, mail_with_files(to, os.urandom(1000)))
        status = wait_until_finished(client, task_id)
    assert status["status"] == "FAILURE", status
    assert status["error"]["type"] == "PermanentDeliveryError"
    # Deleted just after Celery stored the FAILURE.
    wait_for(
        lambda: stack.redis.client.exists(content_key(task_id)) == 0,
        what="the stored files to be deleted",
    )


def test_a_mail_whose_stored_files_are_gone_fails_and_is_not_sent(
    stack: Stack, quiet_api: QuietApi
) -> None:
    to = f"orphan-{uuid.uuid4().hex[:8]}@example.com"
    try:
        # Queued where no worker reads, then its message alone is handed to the stack's
        # worker: the files it names are not in that worker's store, as after they expired.
        with quiet_api.client() as client:
            task_id = submit(client, mail_with_files(to, os.urandom(1000)))
        entry = quiet_api.redis.rpop(EMAIL_QUEUE)
        assert isinstance(entry, bytes)
    finally:
        quiet_api.redis.flushdb()
    worker_redis = stack.redis.client
    assert worker_redis.exists(content_key(task_id)) == 0
    worker_redis.lpush(EMAIL_QUEUE, entry)
    meta_key = f"celery-task-meta-{task_id}"
    wait_for(lambda: worker_redis.exists(meta_key), timeout=30, what="the task's outcome")
    meta = json.loads(worker_redis.get(meta_key) or b"{}")
    assert meta["status"] == "FAILURE", meta
    assert meta["result"]["exc_type"] == "ContentMissing"
    assert "not sent without them" in " ".join(meta["result"]["exc_message"])
    assert stack.smtp.rcpt_attempts(to) == 0
    assert stack.smtp.received_by(to) == []
