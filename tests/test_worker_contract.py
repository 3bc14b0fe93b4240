"""The worker validates what it receives; a bad message fails visibly and the worker goes on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from shared_schemas.tasks import EMAIL_QUEUE, SEND_EMAIL, task_routes
from tests.conftest import API_KEY, Stack
from tests.faults import forge_submission
from tests.test_end_to_end import unique_subject, wait_until_finished

pytestmark = pytest.mark.integration


@pytest.fixture
def producer(stack: Stack) -> Iterator[Celery]:
    """A bare publisher, as a buggy or outdated client of the queue would be."""
    app = Celery("raw-producer", broker=stack.env["CELERY_BROKER_URL"], set_as_current=False)
    app.conf.update(task_serializer="json", task_routes=task_routes())
    yield app
    app.close()


def _publish_raw(stack: Stack, producer: Celery, kwargs: dict[str, Any]) -> str:
    task_id = forge_submission(stack.env["CELERY_RESULT_BACKEND"], SEND_EMAIL, API_KEY)
    producer.send_task(SEND_EMAIL, kwargs=kwargs, task_id=task_id)
    return task_id


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"email": {"to": ["bad-address"], "subject": "s", "body": "b"}},
            "to.0: value is not a valid email address",
        ),
        (
            {"email": {"to": "a@example.com", "subject": "s\r\nBcc: x@example.com", "body": "b"}},
            "subject: Value error, must be a single line",
        ),
        ({"email": {"to": "a@example.com"}}, "subject: Field required"),
        ({}, "missing a required argument: 'email'"),
        ({"mail": {}}, "missing a required argument: 'email'"),
    ],
    ids=["bad address", "header injection", "missing fields", "no payload", "wrong keyword"],
)
def test_invalid_message_fails_with_the_reason_and_the_worker_goes_on(
    stack: Stack, producer: Celery, kwargs: dict[str, Any], expected: str
) -> None:
    task_id = _publish_raw(stack, producer, kwargs)
    with stack.client() as client:
        status = wait_until_finished(client, task_id)
        assert status["status"] == "FAILURE", status
        assert status["error"]["type"] == "InvalidPayload"
        assert expected in status["error"]["message"]

        subject = unique_subject("after a bad message")
        response = client.post(
            "/send-email", json={"to": "ok@example.com", "subject": subject, "body": "ok"}
        )
        assert wait_until_finished(client, response.json()["task_id"])["status"] == "SUCCESS"
    assert stack.worker.alive()
    stack.smtp.wait_for_messages(1, Subject=subject)


def test_a_task_name_no_worker_knows_fails_visibly(stack: Stack, producer: Celery) -> None:
    """A rolling deploy: a newer publisher sends a task this worker does not have."""
    task_id = forge_submission(stack.env["CELERY_RESULT_BACKEND"], "email.send_v2", API_KEY)
    producer.send_task("email.send_v2", kwargs={}, task_id=task_id, queue=EMAIL_QUEUE)
    with stack.client() as http:
        status = wait_until_finished(http, task_id)
    assert status["status"] == "FAILURE"
    assert status["error"]["type"] == "NotRegistered"
    assert "email.send_v2" in status["error"]["message"]
    assert stack.worker.alive()
