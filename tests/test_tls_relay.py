"""Self-checks of the TLS relay fixture (tests/tls_relay.py), with the standard
library's smtplib and ssl only, and a pin of what smtplib raises in each TLS
misconfiguration (the worker sees the same)."""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.tls_relay import Security, TlsRelay

USER = "usér"
PASSWORD = "pässwörd €"  # non-ASCII on purpose
SENDER = "sender@example.org"
RECIPIENT = "rcpt@example.com"
MESSAGE = b"From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
TIMEOUT = 5


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def auth_utf8(client: smtplib.SMTP, mechanism: str, username: str, password: str) -> int:
    """AUTH with UTF-8 credentials (RFC 4954); smtplib's login() only sends ASCII."""
    user, secret = username.encode(), password.encode()
    if mechanism == "PLAIN":
        code, _ = client.docmd("AUTH", "PLAIN " + b64(b"\0" + user + b"\0" + secret))
        return code
    code, _ = client.docmd("AUTH", "LOGIN " + b64(user))
    if code != 334:
        return code
    code, _ = client.docmd(b64(secret))
    return code


@contextmanager
def connect(
    relay: TlsRelay,
    context: ssl.SSLContext,
    host: str = "127.0.0.1",
    timeout: float = TIMEOUT,
) -> Iterator[smtplib.SMTP]:
    """An EHLO'd session the way SMTP_SECURITY=relay.security would open it."""
    client: smtplib.SMTP
    if relay.security == "tls":
        client = smtplib.SMTP_SSL(host, relay.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(host, relay.port, timeout=timeout)
    with client:
        client.ehlo()
        if relay.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        yield client


def trusting(relay: TlsRelay) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=relay.ca_file)


@pytest.mark.parametrize(
    ("security", "with_auth", "mechanism"),
    [
        ("none", False, None),
        ("none", True, "LOGIN"),
        ("starttls", False, None),
        ("starttls", True, "PLAIN"),
        ("tls", False, None),
        ("tls", True, "LOGIN"),
    ],
)
def test_a_client_trusting_the_ca_file_delivers(
    security: Security, with_auth: bool, mechanism: str | None
) -> None:
    credentials = (USER, PASSWORD) if with_auth else (None, None)
    # Over plain text AUTH is only offered when told to: here deliberately.
    with TlsRelay(security, *credentials, auth_require_tls=security != "none") as relay:
        with connect(relay, trusting(relay)) as client:
            assert client.has_extn("auth") == with_auth
            if mechanism is not None:
                assert auth_utf8(client, mechanism, USER, PASSWORD) == 235
            assert client.sendmail(SENDER, [RECIPIENT], MESSAGE) == {}
        [mail] = relay.wait_for_received(1)
        assert (mail.mail_from, mail.rcpt_tos, mail.data) == (SENDER, [RECIPIENT], MESSAGE)
        assert mail.tls == (security != "none")
        assert mail.login == (USER if with_auth else None)
        attempts = relay.auth_attempts
        assert [(a.mechanism, a.success) for a in attempts] == (
            [(mechanism, True)] if with_auth else []
        )
        if with_auth:
            assert (attempts[0].login, attempts[0].password) == (USER.encode(), PASSWORD.encode())


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_wrong_password_is_535_and_mail_without_auth_530(security: Security) -> None:
    with TlsRelay(security, USER, PASSWORD) as relay:
        with connect(relay, trusting(relay)) as client:
            assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
            assert auth_utf8(client, "PLAIN", USER, PASSWORD + "x") == 535
            assert auth_utf8(client, "LOGIN", USER.upper(), PASSWORD) == 535
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail(SENDER, [RECIPIENT], MESSAGE)
            assert (refused.value.smtp_code, refused.value.smtp_error) == (
                530,
                b"5.7.0 Authentication required",
            )
        assert relay.received == []
        assert [a.success for a in relay.auth_attempts] == [False, False]


def test_smtplib_login_cannot_send_utf8_credentials() -> None:
    # Why the worker (and auth_utf8 above) cannot use smtplib's login() for these.
    with TlsRelay("tls", USER, PASSWORD) as relay, connect(relay, trusting(relay)) as client:
        with pytest.raises(UnicodeEncodeError):
            client.login(USER, PASSWORD)
        assert relay.auth_attempts == []


def test_only_the_configured_mechanisms_are_offered() -> None:
    relay = TlsRelay("starttls", USER, PASSWORD, auth_mechanisms=("LOGIN",))
    with relay, connect(relay, trusting(relay)) as client:
        assert client.esmtp_features["auth"].split() == ["LOGIN"]
        code, _ = client.docmd("AUTH", "PLAIN " + b64(b"\0u\0p"))
        assert code == 504


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_the_system_default_context_does_not_trust_the_test_ca(security: Security) -> None:
    with TlsRelay(security) as relay:
        with (
            pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
            connect(relay, ssl.create_default_context()),
        ):
            pass
        assert relay.received == []


@pytest.mark.parametrize(
    ("security", "host", "message"),
    [
        ("starttls", "127.0.0.1", "IP address mismatch, certificate is not valid for '127.0.0.1'."),
        ("starttls", "localhost", "Hostname mismatch, certificate is not valid for 'localhost'."),
        ("tls", "127.0.0.1", "IP address mismatch, certificate is not valid for '127.0.0.1'."),
    ],
)
def test_a_certificate_for_another_host_fails_verification(
    security: Security, host: str, message: str
) -> None:
    with TlsRelay(security, cert_hosts=("other.example",)) as relay:
        with (
            pytest.raises(ssl.SSLCertVerificationError) as failed,
            connect(relay, trusting(relay), host=host),
        ):
            pass
        assert failed.value.verify_message == message
        assert relay.received == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_self_signed_certificate_fails_unless_trusted_itself(security: Security) -> None:
    with TlsRelay(security, self_signed=True) as relay:
        with pytest.raises(ssl.SSLCertVerificationError) as failed, connect(relay, trusting(relay)):
            pass
        assert failed.value.verify_message == "self-signed certificate"
        with connect(relay, ssl.create_default_context(cafile=relay.cert_file)) as client:
            client.sendmail(SENDER, [RECIPIENT], MESSAGE)
        relay.wait_for_received(1)


def test_before_starttls_auth_is_not_offered_and_mail_is_refused() -> None:
    with TlsRelay("starttls", USER, PASSWORD) as relay:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")
            with pytest.raises(smtplib.SMTPNotSupportedError, match="SMTP AUTH extension"):
                client.login("user", "secret")
            assert client.docmd("AUTH", "PLAIN " + b64(b"\0u\0p")) == (
                530,
                b"Must issue a STARTTLS command first",
            )
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail(SENDER, [RECIPIENT], MESSAGE)
            assert refused.value.smtp_code == 530
            client.starttls(context=trusting(relay))
            client.ehlo()
            assert not client.has_extn("starttls")
            assert client.has_extn("auth")
        assert relay.auth_attempts == []


def test_plain_relay_with_credentials_keeps_auth_for_tls_by_default() -> None:
    relay = TlsRelay("none", USER, PASSWORD)
    with relay, smtplib.SMTP("127.0.0.1", relay.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        assert not client.has_extn("starttls")
        code, text = client.docmd("AUTH", "PLAIN " + b64(b"\0u\0p"))
        assert code == 538
        assert text == b"5.7.11 Encryption required for requested authentication mechanism"


@pytest.mark.parametrize("smtputf8", [True, False])
def test_smtputf8_is_offered_only_when_asked(smtputf8: bool) -> None:
    with TlsRelay("starttls", smtputf8=smtputf8) as relay:
        with connect(relay, trusting(relay)) as client:
            assert client.has_extn("smtputf8") == smtputf8
            if smtputf8:
                client.sendmail(SENDER, ["jörg@exämple.org"], MESSAGE, mail_options=["SMTPUTF8"])
        if smtputf8:
            [mail] = relay.wait_for_received(1)
            assert mail.rcpt_tos == ["jörg@exämple.org"]
            assert mail.smtputf8


def test_implicit_tls_to_a_starttls_port_fails_at_once() -> None:
    with TlsRelay("starttls") as relay, pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
        smtplib.SMTP_SSL("127.0.0.1", relay.port, timeout=TIMEOUT, context=trusting(relay))


def test_plain_text_to_an_implicit_tls_port_waits_for_the_timeout() -> None:
    # The relay waits for a ClientHello, the client for a greeting: only the client's
    # timeout ends it.
    relay = TlsRelay("tls")
    with relay, pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtplib.SMTP("127.0.0.1", relay.port, timeout=0.5)


def test_starttls_against_a_plain_relay_is_not_supported() -> None:
    relay = TlsRelay("none")
    with (
        relay,
        smtplib.SMTP("127.0.0.1", relay.port, timeout=TIMEOUT) as client,
        pytest.raises(smtplib.SMTPNotSupportedError, match="STARTTLS extension"),
    ):
        client.starttls(context=trusting(relay))
