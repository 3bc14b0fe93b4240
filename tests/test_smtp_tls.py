"""The worker against real TLS relays (a throwaway CA from trustme, aiosmtpd): each
security mode delivers with SMTP_CA_FILE, each misconfiguration fails at once with what
to check, and a password, wrong or not ASCII, leaves no trace in what the worker says."""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared_schemas.email import SendEmailRequest
from tests.conftest import service_env
from tests.procs import RedisServer, start_api, start_worker
from tests.smtp_sink import SmtpSink
from tests.test_end_to_end import wait_until_finished
from tests.tls_relay import TlsRelay
from worker_service import relay_session, smtp
from worker_service.errors import PermanentDeliveryError, RelayMisconfigured
from worker_service.message import build_message
from worker_service.metrics import RELAY_MISCONFIGURED
from worker_service.settings import WorkerSettings

pytestmark = pytest.mark.integration

USER = "intl@example.com"
PASSWORD = "pässwörd-Ünïcode"


@pytest.fixture(autouse=True)
def _fresh_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(relay_session, "_sessions", threading.local())


def _settings(relay: TlsRelay, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": relay.port,
        "smtp_security": relay.security,
        "smtp_ca_file": relay.ca_file,
        "smtp_timeout": 5,
        "smtp_keepalive": 0,
        "mail_from": "Sender <sender@example.org>",
    }
    if relay.username is not None:
        values |= {"smtp_username": relay.username, "smtp_password": relay.password}
    return WorkerSettings(**(values | overrides))


def _send(settings: WorkerSettings, to: str = "alice@example.com") -> smtp.Delivery:
    email = SendEmailRequest.model_validate({"to": [to], "subject": "TLS", "body": "hello"})
    message = build_message(
        email, mail_from=settings.mail_from, message_id="<t@example.org>", date=datetime.now(UTC)
    )
    return smtp.deliver(message, [to], settings, lambda _: None, time.monotonic() + 10)


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_each_tls_mode_with_auth_delivers_with_the_ca_file(security: str) -> None:
    with TlsRelay(security, USER, PASSWORD) as relay:  # type: ignore[arg-type]
        delivery = _send(_settings(relay))
        [mail] = relay.wait_for_received(1)
    assert delivery.accepted == ["alice@example.com"]
    assert mail.tls
    assert mail.login == USER


def test_a_plain_relay_delivers_without_tls() -> None:
    with TlsRelay("none") as relay:
        assert _send(_settings(relay, smtp_ca_file=None)).accepted == ["alice@example.com"]


def _misconfigured(settings: WorkerSettings, reason: str) -> RelayMisconfigured:
    before = RELAY_MISCONFIGURED.labels(reason)._value.get()
    started = time.monotonic()
    with pytest.raises(RelayMisconfigured) as caught:
        _send(settings)
    assert time.monotonic() - started < 3, "a misconfiguration is not waited out"
    assert RELAY_MISCONFIGURED.labels(reason)._value.get() == before + 1
    return caught.value


def test_a_certificate_from_an_unknown_ca_fails_at_once_naming_smtp_ca_file() -> None:
    with TlsRelay("starttls") as relay:
        error = _misconfigured(_settings(relay, smtp_ca_file=None), "certificate")
    assert "failed verification" in str(error)
    assert "SMTP_CA_FILE" in str(error)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("mismatch", "mismatch"), ("self-signed", "self-signed certificate")],
)
def test_a_certificate_for_another_host_or_self_signed_fails_at_once(
    kind: str, expected: str
) -> None:
    options: dict[str, Any] = (
        {"cert_hosts": ("other.example",)} if kind == "mismatch" else {"self_signed": True}
    )
    with TlsRelay("tls", **options) as relay:
        error = _misconfigured(_settings(relay), "certificate")
    assert expected in str(error)


def test_implicit_tls_against_a_starttls_port_fails_at_once() -> None:
    with TlsRelay("starttls") as relay:
        error = _misconfigured(_settings(relay, smtp_security="tls"), "tls_handshake")
    assert "SMTP_SECURITY=starttls" in str(error)


def test_starttls_against_a_relay_without_it_fails_at_once() -> None:
    with TlsRelay("none") as relay:
        error = _misconfigured(_settings(relay, smtp_security="starttls"), "starttls_not_offered")
    assert "does not offer STARTTLS" in str(error)


def test_auth_configured_where_the_relay_offers_none_fails_at_once() -> None:
    with TlsRelay("starttls") as relay:
        settings = _settings(relay, smtp_username=USER, smtp_password=PASSWORD)
        error = _misconfigured(settings, "auth_not_offered")
    assert "offers no AUTH" in str(error)


def test_a_relay_that_wants_auth_or_tls_first_fails_at_once() -> None:
    with TlsRelay("starttls", USER, PASSWORD) as relay:
        error = _misconfigured(
            _settings(relay, smtp_security="none", smtp_username=None, smtp_password=None),
            "auth_or_tls_required",
        )
    assert "530" in str(error)


def test_a_non_ascii_recipient_without_smtputf8_fails_at_once() -> None:
    with TlsRelay("starttls") as relay, pytest.raises(PermanentDeliveryError) as caught:
        _send(_settings(relay), to="jörg@example.com")
    assert "SMTPUTF8" in str(caught.value)


def test_a_non_ascii_recipient_goes_through_a_relay_with_smtputf8() -> None:
    with TlsRelay("starttls", smtputf8=True) as relay:
        assert _send(_settings(relay), to="jörg@example.com").accepted == ["jörg@example.com"]


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.parametrize("password", ["wrong-password", "wröng-pässwörd"])
def test_refused_credentials_fail_at_once_and_leave_no_trace(
    password: str, caplog_all: pytest.LogCaptureFixture
) -> None:
    with TlsRelay("starttls", USER, PASSWORD) as relay:
        error = _misconfigured(_settings(relay, smtp_password=password), "credentials")
    told = " ".join([str(error), repr(error), *traceback.format_exception(error)])
    told += caplog_all.text
    assert "535" in str(error)
    for secret in (password, PASSWORD, USER):
        assert secret not in told
    assert "pässwörd" not in told


def test_a_non_ascii_password_logs_in() -> None:
    with TlsRelay("starttls", USER, PASSWORD, auth_mechanisms=("LOGIN",)) as relay:
        assert _send(_settings(relay)).accepted == ["alice@example.com"]
        [attempt] = relay.auth_attempts
    assert attempt.success
    assert attempt.password == PASSWORD.encode()


SECRET_DB = 13


def test_a_refused_non_ascii_password_leaves_no_trace_in_status_redis_or_logs(
    redis_server: RedisServer, smtp: SmtpSink, log_dir: Path
) -> None:
    """End to end on real processes: the task fails at once, and the password appears
    in no status, no Redis value and no line the worker logged."""
    wrong = "wröng-pässwörd-7"
    env = {
        **service_env(redis_server, smtp, db=SECRET_DB),
        "LOG_LEVEL": "DEBUG",
    }
    with TlsRelay("starttls", USER, PASSWORD) as relay:
        env |= {
            "SMTP_PORT": str(relay.port),
            "SMTP_SECURITY": "starttls",
            "SMTP_CA_FILE": str(relay.ca_file),
            "SMTP_USERNAME": USER,
            "SMTP_PASSWORD": wrong,
        }
        worker = start_worker(f"secret-{uuid.uuid4().hex[:6]}", env, log_dir)
        api, base_url = start_api(env, log_dir, name="secret-api")
        store = redis.Redis(port=redis_server.port, db=SECRET_DB)
        try:
            key = env["API_KEYS"].split(",")[0].strip()
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
            ) as client:
                response = client.post(
                    "/send-email", json={"to": "a@example.com", "subject": "s", "body": "b"}
                )
                assert response.status_code == 202, response.text
                status = wait_until_finished(client, response.json()["task_id"])
            stored = [store.dump(name) or b"" for name in store.scan_iter()]
            logged = worker.log()
        finally:
            api.stop()
            worker.stop()
            store.flushdb()
            store.close()
    assert status["status"] == "FAILURE", status
    assert status["retries"] == 0
    assert status["error"]["type"] == "RelayMisconfigured"
    assert "535" in status["error"]["message"]
    forms = [wrong, repr(wrong)[1:-1], ascii(wrong)[1:-1], wrong.encode().hex()]
    said = json.dumps(status, ensure_ascii=False) + json.dumps(status) + logged
    for form in forms:
        assert form not in said, form
        for value in stored:
            assert form.encode() not in value
            assert wrong.encode() not in value
