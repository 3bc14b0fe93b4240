"""An SMTP session with the relay: connect, TLS, AUTH, and keeping it between mails."""

from __future__ import annotations

import base64
import contextlib
import smtplib
import threading
import time

from worker_service.settings import SmtpSecurity, WorkerSettings


def connect(settings: WorkerSettings, deadline: float) -> smtplib.SMTP:
    """A session ready for MAIL FROM. Raises what smtplib and ssl raise
    (smtp_outcomes classifies it)."""
    host, port = settings.smtp_host, settings.smtp_port
    # The watchdog guards a session's socket once it exists; until then the connect's
    # own timeout keeps it within the attempt's deadline.
    timeout = max(min(settings.smtp_timeout, deadline - time.monotonic()), 0.001)
    if settings.smtp_security is SmtpSecurity.TLS:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, port, timeout=timeout, context=settings.tls_context
        )
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    try:
        client.ehlo()
        if settings.smtp_security is SmtpSecurity.STARTTLS:
            client.starttls(context=settings.tls_context)
            client.ehlo()
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            login(client, settings.smtp_username, password)
    except BaseException:
        close(client)
        raise
    return client


def login(client: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN or LOGIN with the credentials in UTF-8 (RFC 4616, RFC 4954), where
    smtplib's own ``login`` takes ASCII only and, given anything else, raises an error
    whose text holds the password. CRAM-MD5 alone is left to smtplib."""
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = client.esmtp_features["auth"].upper().split()

    def b64(text: bytes) -> str:
        return base64.b64encode(text).decode("ascii")

    if "PLAIN" in offered:
        token = b64(b"\0" + username.encode() + b"\0" + password.encode())
        code, reply = client.docmd("AUTH", f"PLAIN {token}")
    elif "LOGIN" in offered:
        code, reply = client.docmd("AUTH", f"LOGIN {b64(username.encode())}")
        if code == 334:
            code, reply = client.docmd(b64(password.encode()))
    else:
        try:
            client.login(username, password)
        except UnicodeError:
            # smtplib's CRAM-MD5 takes ASCII only; its error's text holds the password.
            raise smtplib.SMTPNotSupportedError(
                "AUTH is offered only as CRAM-MD5, which cannot carry a non-ASCII "
                "SMTP_USERNAME or SMTP_PASSWORD"
            ) from None
        return
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, reply)


def close(client: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        client.quit()
    with contextlib.suppress(OSError):
        client.close()


class Session:
    """A pool thread's SMTP session, kept open between mails.

    Connecting, the greeting, EHLO (and TLS and AUTH) cost more than sending a small
    mail, so a thread reuses its session. One that sat idle for a while is checked with
    NOOP first: servers drop idle sessions, and a send must not be the first to find
    out (it could not tell whether the server took the mail).
    """

    CHECK_AFTER_IDLE = 1.0

    def __init__(self) -> None:
        self._client: smtplib.SMTP | None = None
        self._last_used = 0.0

    def acquire(self, settings: WorkerSettings, deadline: float) -> smtplib.SMTP:
        client, idle = self._client, time.monotonic() - self._last_used
        self._client = None
        if client is not None and idle > settings.smtp_keepalive:
            close(client)
            client = None
        if client is not None and idle > self.CHECK_AFTER_IDLE:
            try:
                alive = client.noop()[0] == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if not alive:
                close(client)
                client = None
        return client if client is not None else connect(settings, deadline)

    def release(self, client: smtplib.SMTP, settings: WorkerSettings) -> None:
        if settings.smtp_keepalive > 0:
            self._client, self._last_used = client, time.monotonic()
        else:
            close(client)


# One per pool thread: a session carries one mail at a time.
_sessions = threading.local()


def session() -> Session:
    current: Session | None = getattr(_sessions, "session", None)
    if current is None:
        current = _sessions.session = Session()
    return current
