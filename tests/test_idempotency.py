"""Idempotency-Key: a retried submission gets the first task back and sends one mail."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from shared_schemas.tasks import EMAIL_QUEUE
from tests.conftest import API_KEY, OTHER_API_KEY, Stack, service_env
from tests.lossy_proxy import lossy_proxy
from tests.procs import RedisServer, start_api, start_worker
from tests.smtp_sink import SmtpSink
from tests.test_end_to_end import wait_until_finished

pytestmark = pytest.mark.integration

UNCERTAIN_DB = 12


def _mail(to: str, body: str = "once") -> dict[str, str]:
    return {"to": to, "subject": f"idempotent {to}", "body": body}


def test_same_key_and_payload_returns_the_same_task_and_sends_once(stack: Stack) -> None:
    to = f"idem-{uuid.uuid4().hex[:8]}@example.com"
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    with stack.client() as client:
        first = client.post("/send-email", json=_mail(to), headers=headers)
        # The same email, spelled differently (one address instead of a list).
        again = client.post("/send-email", json={**_mail(to), "to": [to]}, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json()["task_id"] == first.json()["task_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Location"] == first.headers["Location"]
        assert wait_until_finished(client, first.json()["task_id"])["status"] == "SUCCESS"
        # After delivery, too.
        late = client.post("/send-email", json=_mail(to), headers=headers)
        assert late.json()["task_id"] == first.json()["task_id"]
    assert len(stack.smtp.received_by(to)) == 1


def test_same_key_with_another_payload_is_409(stack: Stack) -> None:
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    with stack.client() as client:
        first = client.post("/send-email", json=_mail("a@example.com"), headers=headers)
        clash = client.post("/send-email", json=_mail("a@example.com", "other"), headers=headers)
    assert first.status_code == 202
    assert clash.status_code == 409
    assert "different email" in clash.json()["detail"]


def test_keys_are_scoped_to_the_api_key(stack: Stack) -> None:
    headers = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
    with stack.client() as one, stack.client(OTHER_API_KEY) as other:
        mine = one.post("/send-email", json=_mail("b@example.com"), headers=headers)
        theirs = other.post("/send-email", json=_mail("b@example.com", "x"), headers=headers)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["task_id"] != theirs.json()["task_id"]


def test_a_malformed_key_is_422(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/send-email", json=_mail("c@example.com"), headers={"Idempotency-Key": "a b"}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


@pytest.mark.parametrize("redis_ran_it", [True, False], ids=["queued", "not-queued"])
def test_a_503_whose_outcome_is_unknown_is_settled_by_a_replay_and_sends_once(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path, redis_ran_it: bool
) -> None:
    """Redis stops answering while the API writes a message (the connection drops before
    the reply, twice): the caller hears 503 and cannot know whether it was queued. Its
    retry with the same Idempotency-Key gets the same task, queued once either way, and
    one mail goes out (docs/delivery-guarantees.md)."""
    store = redis.Redis(port=redis_server.port, db=UNCERTAIN_DB)
    env = service_env(redis_server, smtp, db=UNCERTAIN_DB)
    to = f"uncertain-{uuid.uuid4().hex[:8]}@example.com"
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": f"k-{uuid.uuid4()}"}
    with lossy_proxy(redis_server.port) as proxy:
        api, base_url = start_api(
            {**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/{UNCERTAIN_DB}"},
            log_dir,
            name=f"uncertain-api-{redis_ran_it}",
        )
        worker = None
        try:
            with httpx.Client(base_url=base_url, headers=headers, timeout=15) as client:
                # One ordinary submission first, so Redis has the publish script and a
                # lost publish is really run (or not) rather than refused with NOSCRIPT.
                warm = client.post(
                    "/send-email",
                    json=_mail(to, "warm-up"),
                    headers={"Idempotency-Key": f"w-{uuid.uuid4()}"},
                )
                assert warm.status_code == 202, warm.text
                store.delete(EMAIL_QUEUE)
                proxy.lose_publishes(2, redis_runs_them=redis_ran_it)  # the write, its retry
                lost = client.post("/send-email", json=_mail(to))
                assert lost.status_code == 503, lost.text
                assert "may have been queued" in lost.json()["detail"]
                assert "same Idempotency-Key" in lost.json()["detail"]
                assert proxy.publishes_left_to_lose == 0
                assert store.llen(EMAIL_QUEUE) == (1 if redis_ran_it else 0)

                replay = client.post("/send-email", json=_mail(to))
                assert replay.status_code == 202, replay.text
                task_id = replay.json()["task_id"]
                again = client.post("/send-email", json=_mail(to))
                assert again.json()["task_id"] == task_id
                queued = [
                    json.loads(raw)["headers"]["id"] for raw in store.lrange(EMAIL_QUEUE, 0, -1)
                ]
                assert queued == [task_id]
                assert client.get(f"/task-status/{task_id}").json()["status"] == "PENDING"

                worker = start_worker(f"uncertain-worker-{redis_ran_it}", env, log_dir)
                assert wait_until_finished(client, task_id)["status"] == "SUCCESS"
            assert len(smtp.received_by(to)) == 1  # the warm-up mail was never sent
        finally:
            if worker is not None:
                worker.stop()
            api.stop()
            store.flushdb()
            store.close()
