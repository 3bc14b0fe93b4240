"""Transient SMTP failures are retried with backoff, permanent ones fail at once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import MAX_RETRIES, Stack
from tests.procs import wait_for

pytestmark = pytest.mark.integration


def _address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def _post(client: httpx.Client, to: str) -> str:
    response = client.post("/send-email", json={"to": to, "subject": f"to {to}", "body": "x"})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def _follow(client: httpx.Client, task_id: str, timeout: float = 40) -> list[dict[str, Any]]:
    """Every distinct status seen until the task finished."""
    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        status = client.get(f"/task-status/{task_id}").json()
        if not seen or (status["status"], status["retries"]) != (
            seen[-1]["status"],
            seen[-1]["retries"],
        ):
            seen.append(status)
        return status["status"] in ("SUCCESS", "FAILURE")

    wait_for(finished, timeout=timeout, interval=0.01, what=f"{task_id} to finish")
    return seen


def test_a_send_in_flight_is_started_then_success(stack: Stack) -> None:
    to = _address("in-flight")
    stall = stack.smtp.stall_at_rcpt(to)
    with stack.client() as client:
        task_id = _post(client, to)
        try:
            wait_for(lambda: stall.waiting == 1, what="the send to be in flight")
            running = client.get(f"/task-status/{task_id}").json()
        finally:
            stall.release.set()
        final = _follow(client, task_id)[-1]
    assert running["status"] == "STARTED", running
    assert running["started_at"] is not None
    assert running["finished_at"] is None
    assert (running["result"], running["error"]) == (None, None)
    assert final["status"] == "SUCCESS", final
    assert final["started_at"] == running["started_at"]


def test_4xx_is_retried_shown_as_retry_then_delivered_once(stack: Stack) -> None:
    to = _address("greylisted")
    stack.smtp.reply_to_rcpt(to, "451 4.7.1 Greylisted, try again", "421 4.3.2 Busy")
    with stack.client() as client:
        seen = _follow(client, _post(client, to))
    retries = [s for s in seen if s["status"] == "RETRY"]
    assert retries, f"never saw RETRY: {seen}"
    assert retries[0]["retries"] >= 1
    assert retries[0]["error"]["type"] == "TransientDeliveryError"
    assert "451 4.7.1 Greylisted" in retries[0]["error"]["message"]
    final = seen[-1]
    assert final["status"] == "SUCCESS", final
    assert final["retries"] == 2
    assert stack.smtp.rcpt_attempts(to) == 3
    assert len(stack.smtp.received_by(to)) == 1


def test_4xx_until_retries_run_out_fails_with_the_last_error(stack: Stack) -> None:
    to = _address("always-busy")
    replies = [f"451 4.3.0 Busy, attempt {n}" for n in range(MAX_RETRIES + 1)]
    stack.smtp.reply_to_rcpt(to, *replies)
    with stack.client() as client:
        final = _follow(client, _post(client, to))[-1]
    assert final["status"] == "FAILURE", final
    assert final["retries"] == MAX_RETRIES
    assert final["error"]["type"] == "TransientDeliveryError"
    assert f"451 4.3.0 Busy, attempt {MAX_RETRIES}" in final["error"]["message"]
    assert stack.smtp.rcpt_attempts(to) == MAX_RETRIES + 1
    assert stack.smtp.received_by(to) == []


def test_5xx_fails_at_once_with_the_smtp_code_and_text(stack: Stack) -> None:
    to = _address("blocked")
    stack.smtp.reply_to_rcpt(to, "554 5.7.1 Relay access denied")
    with stack.client() as client:
        seen = _follow(client, _post(client, to))
    final = seen[-1]
    assert final["status"] == "FAILURE"
    assert final["retries"] == 0
    assert "RETRY" not in [s["status"] for s in seen]
    assert final["error"]["type"] == "PermanentDeliveryError"
    assert "554 5.7.1 Relay access denied" in final["error"]["message"]
    assert stack.smtp.rcpt_attempts(to) == 1


def test_a_stalled_server_times_out_and_the_retry_delivers(stack: Stack) -> None:
    to = _address("slow")
    stall = stack.smtp.stall_at_rcpt(to)
    with stack.client() as client:
        task_id = _post(client, to)
        # The first attempt hangs until SMTP_TIMEOUT; the retry finds the server well.
        wait_for(lambda: stack.smtp.rcpt_attempts(to) >= 2, timeout=20, what="a second attempt")
        stall.release.set()
        final = _follow(client, task_id)[-1]
    assert final["status"] == "SUCCESS", final
    assert final["retries"] >= 1
    assert len(stack.smtp.received_by(to)) == 1


def _post_to(client: httpx.Client, to: list[str]) -> str:
    response = client.post("/send-email", json={"to": to, "subject": f"to {to[0]}", "body": "x"})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def test_a_recipient_greylisted_once_gets_the_retry_and_the_others_one_copy(
    stack: Stack,
) -> None:
    """The relay takes the mail for alice and defers carol (450): the task retries for
    carol alone, with the same Message-ID, and the status shows who got it meanwhile."""
    alice, carol = _address("alice"), _address("carol")
    stack.smtp.reply_to_rcpt(carol, "450 4.7.1 Greylisted, try again later")
    with stack.client() as client:
        task_id = _post_to(client, [alice, carol])
        seen = _follow(client, task_id)
    waiting = [s for s in seen if s["status"] == "RETRY"]
    assert waiting, seen
    assert waiting[0]["result"]["accepted"] == [alice], waiting[0]
    assert [d["address"] for d in waiting[0]["result"]["deferred"]] == [carol]
    assert waiting[0]["result"]["deferred"][0]["code"] == 450
    assert "deferred by the relay" in waiting[0]["error"]["message"]
    final = seen[-1]
    assert final["status"] == "SUCCESS", final
    assert final["retries"] == 1
    assert final["result"]["accepted"] == [alice, carol]
    assert final["result"]["deferred"] == []
    assert final["result"]["rejected"] == []
    to_alice, to_carol = stack.smtp.received_by(alice), stack.smtp.received_by(carol)
    assert len(to_alice) == 1
    assert len(to_carol) == 1
    assert to_carol[0].rcpt_tos == [carol]  # the retry's envelope: carol alone
    assert to_alice[0].message["Message-ID"] == to_carol[0].message["Message-ID"]
    assert to_alice[0].message["Date"] == to_carol[0].message["Date"]


def test_a_recipient_deferred_until_the_retries_run_out_is_reported_rejected(
    stack: Stack,
) -> None:
    alice, dave = _address("alice"), _address("dave")
    stack.smtp.reply_to_rcpt(dave, *[f"451 4.3.0 Busy {n}" for n in range(MAX_RETRIES + 1)])
    with stack.client() as client:
        final = _follow(client, _post_to(client, [alice, dave]))[-1]
    assert final["status"] == "SUCCESS", final
    assert final["result"]["accepted"] == [alice]
    [rejected] = final["result"]["rejected"]
    assert rejected["address"] == dave
    assert rejected["code"] == 451
    assert f"still deferred after {MAX_RETRIES} retries" in rejected["reason"]
    assert len(stack.smtp.received_by(alice)) == 1
    assert stack.smtp.received_by(dave) == []
