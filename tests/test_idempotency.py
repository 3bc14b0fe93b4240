"""Idempotency-Key: a retried submission gets the first task back and sends one mail."""

from __future__ import annotations

import uuid

from tests.conftest import OTHER_API_KEY, Stack
from tests.test_end_to_end import wait_until_finished


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
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
