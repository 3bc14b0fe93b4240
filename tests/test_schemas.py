"""The shared models on their own: what they accept, refuse and produce."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared_schemas import SEND_EMAIL, TASKS, SendEmailRequest


def test_one_address_becomes_a_list_and_defaults_are_empty() -> None:
    email = SendEmailRequest(to="a@example.com", subject="s", body="b")
    assert email.to == ["a@example.com"]
    assert email.cc == []
    assert email.bcc == []
    assert email.html is None


def test_envelope_lists_each_recipient_once_bcc_included() -> None:
    email = SendEmailRequest.model_validate(
        {
            "to": ["a@example.com", "b@example.com"],
            "cc": ["A@example.com"],
            "bcc": ["c@example.com"],
            "subject": "s",
            "body": "b",
        }
    )
    assert email.envelope_recipients() == ["a@example.com", "b@example.com", "c@example.com"]


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b", "a\u2028b"])
def test_subject_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="single line"):
        SendEmailRequest.model_validate({"to": "a@example.com", "subject": bad, "body": "b"})


def test_exactly_fifty_recipients_is_allowed() -> None:
    to = [f"u{i}@example.com" for i in range(50)]
    SendEmailRequest.model_validate({"to": to, "subject": "s", "body": "b"})


def test_contract_kwargs_round_trip() -> None:
    contract = TASKS[SEND_EMAIL]
    email = SendEmailRequest.model_validate(
        {"to": "a@example.com", "subject": "s", "body": "b", "html": "<p>b</p>"}
    )
    kwargs, stored = contract.message(email, "0b5f8a52-4c1e-4f4e-9d8f-3a2d1c7b6e01")
    assert list(kwargs) == ["email"]
    assert stored == []
    queued = contract.payload.model_validate(kwargs["email"])
    assert queued.model_dump() == {**email.model_dump(), "content_ref": None}
