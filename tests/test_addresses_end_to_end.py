"""Display names and an allowed special-use domain, through a real API, worker and SMTP
server: the API alone holds ALLOWED_SPECIAL_USE_DOMAINS, and the worker (which has no
such setting) delivers what it accepted."""

from __future__ import annotations

from email.message import EmailMessage

import httpx
import pytest

from tests.conftest import API_KEY, Stack
from tests.procs import start_api
from tests.test_end_to_end import unique_subject, wait_until_finished

pytestmark = pytest.mark.integration


def _names(message: EmailMessage, header: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in message[header].addresses]


def test_names_in_headers_bare_addresses_in_the_envelope_at_an_allowed_domain(
    stack: Stack,
) -> None:
    subject = unique_subject("Names")
    payload = {
        "to": ['"Smith, Alice" <alice@corp.local>', "bob@example.com"],
        "cc": "Carol Ünï <carol@example.com>",
        "bcc": "Audit <audit@example.com>",
        "reply_to": "Support <support@corp.local>",
        "subject": subject,
        "body": "Hi.",
    }
    # The session's API allows no special-use domain.
    with stack.client() as client:
        refused = client.post("/send-email", json=payload)
    assert refused.status_code == 422, refused.text
    assert {tuple(e["loc"]) for e in refused.json()["detail"]} == {
        ("body", "to", 0),
        ("body", "reply_to"),
    }

    env = {**stack.env, "ALLOWED_SPECIAL_USE_DOMAINS": "corp.local"}
    api, base_url = start_api(env, stack.log_dir, name="api-special-use")
    try:
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
        ) as client:
            other = client.post("/send-email", json={**payload, "to": "x@printer.local"})
            assert other.status_code == 422, other.text
            response = client.post("/send-email", json=payload)
            assert response.status_code == 202, response.text
            status = wait_until_finished(client, response.json()["task_id"])
    finally:
        api.stop()

    assert status["status"] == "SUCCESS", status
    bare = ["alice@corp.local", "bob@example.com", "carol@example.com", "audit@example.com"]
    assert status["result"]["accepted"] == bare
    [mail] = stack.smtp.wait_for_messages(1, Subject=subject)
    assert mail.rcpt_tos == bare
    message = mail.message
    assert _names(message, "To") == [("Smith, Alice", "alice@corp.local"), ("", "bob@example.com")]
    assert _names(message, "Cc") == [("Carol Ünï", "carol@example.com")]
    assert _names(message, "Reply-To") == [("Support", "support@corp.local")]
    assert "Bcc" not in message
