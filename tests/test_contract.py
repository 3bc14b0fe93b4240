"""shared_schemas is the contract: every task has a matching handler, and the API
dispatches no name outside it."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import api_service
import shared_schemas.tasks
import worker_service
from shared_schemas.email import SendEmailRequest
from shared_schemas.tasks import TASKS


def test_every_task_name_has_a_handler_with_the_shared_models() -> None:
    registered = worker_service.app.tasks
    for name, contract in TASKS.items():
        assert name in registered, f"no worker handler for {name}"
        handler = registered[name]
        function = handler.run.__wrapped__ if hasattr(handler.run, "__wrapped__") else handler.run
        hints = typing.get_type_hints(function)
        assert hints[contract.argument] is contract.payload, name
        assert hints["return"] is contract.result, name
        assert handler.typing is True
        assert getattr(handler, "_dump_pydantic_arguments", None) is not None, (
            f"{name} must be registered with pydantic=True"
        )


def test_task_names_are_namespaced_constants() -> None:
    constants = {
        value
        for key, value in vars(shared_schemas.tasks).items()
        if key.isupper() and isinstance(value, str) and not key.endswith("_QUEUE")
    }
    assert constants == set(TASKS)
    assert all(name.count(".") == 1 for name in TASKS)


def test_every_task_has_a_queue_the_worker_consumes_and_the_api_routes_to() -> None:
    from api_service.publisher import make_producer_app
    from api_service.settings import ApiSettings

    consumed = set(worker_service.app.conf.task_queues)
    producer = make_producer_app(ApiSettings(api_keys="k"))
    for name, contract in TASKS.items():
        assert contract.queue in consumed, name
        route = producer.amqp.router.route({}, name, (), {})
        assert route["queue"].name == contract.queue, name
    producer.close()


def test_the_api_publishes_only_shared_task_names() -> None:
    source_root = Path(inspect.getfile(api_service)).parent
    publishers: list[str] = []
    for path in sorted(source_root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "send_task":
                    publishers.append(path.name)
                if node.func.attr == "submit":
                    first = node.args[0]
                    # Task names come from shared_schemas constants, never literals.
                    assert isinstance(first, ast.Name), ast.dump(first)
                    assert first.id in vars(shared_schemas.tasks), first.id
    # One place sends tasks; what reaches it went through Dispatcher.submit, which
    # refuses names outside TASKS.
    assert publishers == ["publisher.py"]


def test_the_api_publisher_has_no_result_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the Redis backend, every send_task would also subscribe to a result channel."""
    from celery.backends.base import DisabledBackend

    from api_service.publisher import make_producer_app
    from api_service.settings import ApiSettings

    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:1/0")
    producer = make_producer_app(ApiSettings(api_keys="k"))
    assert isinstance(producer.backend, DisabledBackend)
    producer.close()


def test_send_at_stays_with_the_publisher() -> None:
    # The API acts on send_at (the due-time index); the message carries the mail alone.
    email = SendEmailRequest(
        to=["a@example.com"], subject="s", body="b", send_at="2026-11-22T10:00:00Z"
    )
    assert TASKS["email.send"].kwargs(email) == {
        "email": {"to": ["a@example.com"], "subject": "s", "body": "b"}
    }
