"""The worker's webhook call on its own: the address rule, no redirects, one deadline,
and signatures the Standard Webhooks library accepts. Real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import trustme
from standardwebhooks import Webhook

from shared_schemas.webhook_urls import refusal, url_problem
from tests.webhook_receiver import Receiver
from worker_service.webhook_calls import post, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw1Bc3m3dnRLo="


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.1.1", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("100.64.0.1", "reserved"),  # carrier-grade NAT
        ("224.0.0.1", "multicast"),
    ],
)
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    assert refusal(address) == why


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://hooks.example.com/", "https:// or http://"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/#x", "fragment"),
        ("https:///path", "no host"),
        ("https://hooks.example.com:70000/", "Port out of range"),
        ("https://hooks.exämple.com/", "xn--"),
        ("https://hooks.example.com/a b", "spaces"),
    ],
)
def test_unusable_urls_are_named(url: str, words: str) -> None:
    problem = url_problem(url)
    assert problem is not None
    assert words in problem


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    server.secret = SECRET
    yield server
    server.stop()


def _event(at: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    body = b'{"type":"email.delivered","timestamp":"2026-01-01T00:00:00+00:00","data":{}}'
    return body, signed_headers(SECRET, "msg_test", body, at or datetime.now(UTC))


def test_a_signed_call_verifies_with_the_standard_webhooks_library(receiver: Receiver) -> None:
    body, headers = _event()
    answer = post(receiver.url, body, headers, timeout=5, allow_private=True)
    assert answer.ok, answer
    assert answer.status == 200
    [got] = receiver.received
    assert got.verified
    assert got.headers["webhook-id"] == "msg_test"
    assert got.body == body
    Webhook(SECRET).verify(got.body, got.headers)


def test_loopback_is_refused_without_a_connection(receiver: Receiver) -> None:
    body, headers = _event()
    answer = post(receiver.url, body, headers, timeout=5, allow_private=False)
    assert not answer.ok
    assert "loopback" in answer.reason
    assert receiver.received == []
    localhost = f"http://localhost:{receiver.port}/"
    answer = post(localhost, body, headers, timeout=5, allow_private=False)
    assert not answer.ok
    assert "loopback" in answer.reason
    assert receiver.received == []


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    internal = Receiver().start()
    try:
        receiver.answers.append(307)
        receiver.extra_headers["Location"] = internal.url
        body, headers = _event()
        answer = post(receiver.url, body, headers, timeout=5, allow_private=True)
        assert not answer.ok
        assert answer.status == 307
        assert "redirects are not followed" in answer.reason
        assert len(receiver.received) == 1
        assert internal.received == []
    finally:
        internal.stop()


def test_a_non_2xx_answer_fails_the_call(receiver: Receiver) -> None:
    receiver.answers.append(503)
    body, headers = _event()
    answer = post(receiver.url, body, headers, timeout=5, allow_private=True)
    assert (answer.ok, answer.status, answer.reason) == (False, 503, "HTTP 503")


def test_a_silent_receiver_is_cut_off_at_the_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)  # held open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        body, headers = _event()
        started = time.monotonic()
        answer = post(f"http://127.0.0.1:{port}/", body, headers, timeout=1, allow_private=True)
        took = time.monotonic() - started
        assert not answer.ok
        assert "no answer within 1s" in answer.reason
        assert took < 2.5, took
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def test_nothing_listening_is_a_failed_call() -> None:
    body, headers = _event()
    answer = post(
        f"http://127.0.0.1:{Receiver().port}/", body, headers, timeout=2, allow_private=True
    )
    assert (answer.ok, answer.reason) == (False, "connection refused")


def test_tls_is_verified_for_the_host_name_on_the_pinned_address() -> None:
    """The connection goes to the checked address, and TLS still checks the certificate
    for the URL's host: a certificate from a CA the system does not trust is refused."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(conn, server_side=True).close()
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        body, headers = _event()
        answer = post(f"https://localhost:{port}/", body, headers, timeout=5, allow_private=True)
        assert not answer.ok
        assert "TLS certificate not valid" in answer.reason, answer.reason
    finally:
        listener.close()
        thread.join(5)
