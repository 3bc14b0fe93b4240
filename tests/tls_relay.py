"""A real SMTP relay with real TLS (aiosmtpd in a thread, certificates from trustme).

It stands for a company's relay behind a private CA: the worker's SMTP_CA_FILE gets
``relay.ca_file``, SMTP_SECURITY the relay's ``security``, SMTP_USERNAME/SMTP_PASSWORD
its credentials::

    with TlsRelay(security="starttls", username="u", password="pässwörd") as relay:
        ...  # SMTP_PORT=relay.port, SMTP_CA_FILE=relay.ca_file
        relay.wait_for_received(1)

``security``:

* ``"starttls"``: plain connect, STARTTLS offered and required (``530 Must issue a
  STARTTLS command first`` for anything but EHLO/NOOP/QUIT/STARTTLS before it);
* ``"tls"``: implicit TLS from the first byte (SMTPS, port 465 style);
* ``"none"``: plain, no STARTTLS offered.

With credentials the relay requires AUTH before MAIL (``530 5.7.0 Authentication
required``), offers PLAIN and LOGIN and compares the UTF-8 bytes exactly (``535 5.7.8
Authentication credentials invalid`` otherwise). By default (``auth_require_tls``) AUTH
is offered only over TLS: over plain text EHLO does not list it, and AUTH is answered
``530 Must issue a STARTTLS command first`` before STARTTLS (``"starttls"``) or ``538
5.7.11 Encryption required for requested authentication mechanism`` (``"none"``).
Without credentials AUTH is not offered at all.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.procs import free_port, wait_for

Security = Literal["none", "starttls", "tls"]

DEFAULT_CERT_HOSTS = ("127.0.0.1", "localhost")
# What the relay calls itself in its greeting and EHLO (not a name the client checks).
RELAY_NAME = "relay.test"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # the message as received, CRLF line ends, dot-stuffing undone
    smtputf8: bool  # MAIL FROM carried SMTPUTF8
    mail_options: list[str]
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    login: str | None  # the user the session authenticated as, if it did


@dataclass(frozen=True)
class AuthAttempt:
    mechanism: str  # "PLAIN" or "LOGIN"
    login: bytes  # as the client sent them (UTF-8 if it followed RFC 4954)
    password: bytes
    success: bool
    tls: bool


def _is_tls(server: Any) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


@dataclass
class _Recorder:
    username: str | None
    password: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[ReceivedMail] = field(default_factory=list)
    auth_attempts: list[AuthAttempt] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        """aiosmtpd's ``authenticator``: called for PLAIN and LOGIN with the decoded bytes."""
        assert isinstance(auth_data, LoginPassword)
        login, password = bytes(auth_data.login), bytes(auth_data.password)
        success = (
            self.username is not None
            and self.password is not None
            and login == self.username.encode()
            and password == self.password.encode()
        )
        with self.lock:
            self.auth_attempts.append(
                AuthAttempt(mechanism, login, password, success, _is_tls(server))
            )
        # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=success, handled=False, auth_data=auth_data)


class _Handler:
    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must record it itself
        if self.recorder.username is None:
            # aiosmtpd lists AUTH (PLAIN LOGIN, every attempt refused) even with no
            # credentials to check; a relay without accounts does not.
            responses = [line for line in responses if not line[4:].startswith("AUTH")]
        return responses

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content
        assert isinstance(content, bytes)
        auth_data = session.auth_data if session.authenticated else None
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            data=content,
            smtputf8=bool(envelope.smtp_utf8),
            mail_options=list(envelope.mail_options),
            tls=_is_tls(server),
            login=login,
        )
        with self.recorder.lock:
            self.recorder.received.append(mail)
        return "250 Message accepted for delivery"

    async def handle_exception(self, error: Exception) -> str:
        # A failed STARTTLS handshake arrives here as TLSSetupException (aiosmtpd then
        # closes the connection); keep it for the test instead of logging a traceback.
        cause = error.__cause__ if isinstance(error, TLSSetupException) else None
        with self.recorder.lock:
            self.recorder.errors.append(cause or error)
        return f"421 4.3.0 Error: {error.__class__.__name__}"


class _RelaySMTP(SMTP):
    """aiosmtpd's SMTP, with "AUTH required" as its own switch.

    aiosmtpd's ``auth_required=True`` with ``auth_require_tls=False`` warns ("Requiring
    AUTH while not requiring TLS...") on every connection. Implicit TLS needs exactly
    that combination, since aiosmtpd's auth_require_tls only counts STARTTLS as TLS, so
    this requires AUTH the way ``auth_required`` does, without the false alarm.
    """

    def __init__(self, handler: Any, *, require_auth: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._relay_requires_auth = require_auth

    async def check_auth_needed(self, caller_method: str) -> bool:
        assert self.session is not None
        if self._relay_requires_auth and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return True
        return False


class _RelayController(Controller):
    def __init__(self, handler: _Handler, smtp_kwargs: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._smtp_kwargs = smtp_kwargs

    def factory(self) -> SMTP:
        return _RelaySMTP(self.handler, **self._smtp_kwargs)


def _self_signed(hosts: Iterable[str], key_file: Path, cert_file: Path) -> None:
    """A self-signed server certificate for ``hosts`` (right names, untrusted issuer)."""
    hosts = list(hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class TlsRelay:
    """An SMTP relay on 127.0.0.1 with a certificate from a throwaway test CA.

    ``ca_file``: the CA's PEM (for SMTP_CA_FILE). ``cert_file``: the certificate the
    relay presents (with ``self_signed=True`` the only thing that would make it trusted).
    ``cert_hosts``: the names in the certificate (``("other.example",)`` for a
    mismatch). ``self_signed``: present a self-signed certificate the CA did not issue.
    ``smtputf8``: offer SMTPUTF8. ``auth_mechanisms``: what AUTH offers, of PLAIN and
    LOGIN. ``auth_require_tls=False`` offers AUTH over plain text too (only matters
    with ``security="none"`` or before STARTTLS).
    """

    def __init__(
        self,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        *,
        cert_hosts: Iterable[str] = DEFAULT_CERT_HOSTS,
        self_signed: bool = False,
        smtputf8: bool = False,
        auth_require_tls: bool = True,
        auth_mechanisms: Iterable[str] = ("PLAIN", "LOGIN"),
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, not {security!r}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.security = security
        self.username, self.password = username, password
        self.cert_hosts = tuple(cert_hosts)
        self._dir = tempfile.TemporaryDirectory(prefix="tls-relay-")
        directory = Path(self._dir.name)
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        if self_signed:
            _self_signed(self.cert_hosts, self.key_file, self.cert_file)
        else:
            leaf = self.ca.issue_cert(*self.cert_hosts)
            leaf.private_key_pem.write_to_path(str(self.key_file))
            for blob in leaf.cert_chain_pems:
                blob.write_to_path(str(self.cert_file), append=True)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(self.cert_file, self.key_file)

        self._recorder = _Recorder(username, password)
        handler = _Handler(self._recorder)
        excluded = {"PLAIN", "LOGIN"} - {m.upper() for m in auth_mechanisms}
        smtp_kwargs: dict[str, Any] = {
            "hostname": RELAY_NAME,
            "enable_SMTPUTF8": smtputf8,
            "require_auth": username is not None,
            # Implicit TLS is TLS, though aiosmtpd only counts STARTTLS as such.
            "auth_require_tls": auth_require_tls and security != "tls",
            "auth_exclude_mechanism": sorted(excluded),
        }
        if username is not None:
            smtp_kwargs["authenticator"] = self._recorder.authenticate
        if security == "starttls":
            smtp_kwargs["tls_context"] = server_context
            smtp_kwargs["require_starttls"] = True
        self.port = free_port()
        self._controller: _RelayController | None = _RelayController(
            handler,
            smtp_kwargs,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=server_context if security == "tls" else None,
        )
        try:
            self._controller.start()  # returns once a first connection was served
        except BaseException:
            self._dir.cleanup()
            raise

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def received(self) -> list[ReceivedMail]:
        with self._recorder.lock:
            return list(self._recorder.received)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._recorder.lock:
            return list(self._recorder.auth_attempts)

    @property
    def errors(self) -> list[BaseException]:
        """Session errors: a failed STARTTLS handshake's ssl.SSLError, for one."""
        with self._recorder.lock:
            return list(self._recorder.errors)

    def wait_for_received(self, count: int, timeout: float = 30) -> list[ReceivedMail]:
        wait_for(
            lambda: len(self.received) >= count,
            timeout=timeout,
            what=f"{count} mail(s) at the TLS relay",
        )
        return self.received

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
            self._dir.cleanup()

    def __enter__(self) -> TlsRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
