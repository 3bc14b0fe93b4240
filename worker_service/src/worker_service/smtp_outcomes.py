"""What each SMTP answer, or failure to get one, means for a mail: retried, failed at
once, or a relay misconfigured; and the error's text scrubbed of the credentials.

The table of replies and outcomes is in README.md ("What the relay's answers lead to")
and docs/delivery-guarantees.md ("SMTP outcomes").
"""

from __future__ import annotations

import base64
import smtplib
import ssl

from worker_service.errors import (
    PermanentDeliveryError,
    RelayMisconfigured,
    TransientDeliveryError,
)
from worker_service.metrics import RELAY_MISCONFIGURED
from worker_service.settings import SmtpSecurity, WorkerSettings

# OpenSSL's reasons for a handshake with something that does not speak TLS there: the
# port speaks plain SMTP (a STARTTLS port) or another protocol.
_NOT_TLS_HERE = {
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "UNSUPPORTED_PROTOCOL",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "HTTP_REQUEST",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
}


def reply_text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def scrub(text: str, settings: WorkerSettings) -> str:
    """``text`` with every form of the credentials a library could have put in it (as
    given, escaped as repr() writes it, base64 alone or in an AUTH PLAIN token) blanked."""
    forms: set[str] = set()
    for secret in settings.secrets:
        encoded = secret.encode()
        forms |= {
            secret,
            repr(secret)[1:-1],
            ascii(secret)[1:-1],
            encoded.decode("unicode_escape", errors="ignore"),
            base64.b64encode(encoded).decode(),
        }
    if len(settings.secrets) == 2:
        password, username = settings.secrets
        token = b"\0" + username.encode() + b"\0" + password.encode()
        forms.add(base64.b64encode(token).decode())
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 2:
            text = text.replace(form, "***")
    return text


def classified(exc: BaseException, settings: WorkerSettings) -> Exception:
    """The task's error for ``exc``, raised by the SMTP exchange."""
    error = _classified(exc, settings)
    error.args = tuple(scrub(str(arg), settings) for arg in error.args)
    if isinstance(error, RelayMisconfigured) or "SMTPUTF8" in str(error):
        RELAY_MISCONFIGURED.labels(_reason(exc)).inc()
    return error


def _where(settings: WorkerSettings) -> str:
    return f"{settings.smtp_host}:{settings.smtp_port}"


def _classified(exc: BaseException, settings: WorkerSettings) -> Exception:
    where = _where(settings)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RelayMisconfigured(
            f"the TLS certificate of {where} failed verification: {exc.verify_message}; "
            "for a private CA, set SMTP_CA_FILE"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS_HERE:
        hint = (
            "with SMTP_SECURITY=tls the port must speak TLS from its first byte (usually "
            "465); a port that upgrades with STARTTLS (587, 25) needs SMTP_SECURITY=starttls"
            if settings.smtp_security is SmtpSecurity.TLS
            else "the relay does not speak TLS as expected"
        )
        return RelayMisconfigured(f"the TLS handshake with {where} failed ({exc.reason}): {hint}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        text = str(exc)
        if "STARTTLS" in text:
            return RelayMisconfigured(
                f"SMTP_SECURITY=starttls, but {where} does not offer STARTTLS; an "
                "implicit-TLS port (usually 465) needs SMTP_SECURITY=tls"
            )
        if "CRAM-MD5" in text:
            return RelayMisconfigured(f"{where}: {text}")
        if "AUTH" in text:
            return RelayMisconfigured(
                f"SMTP_USERNAME is set, but {where} offers no AUTH{_tls_hint(settings)}"
            )
        if "SMTPUTF8" in text:
            return PermanentDeliveryError(
                f"the sender or a recipient has a non-ASCII address, which needs SMTPUTF8; "
                f"{where} does not offer it"
            )
        return PermanentDeliveryError(f"{where} does not support what this mail needs: {text}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"{exc.smtp_code} {reply_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            return TransientDeliveryError(f"{where} could not check the credentials now: {text}")
        return RelayMisconfigured(f"{where} refused SMTP_USERNAME/SMTP_PASSWORD: {text}")
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code in (530, 538):
        # "Authentication required", "Must issue a STARTTLS command first", "Encryption
        # required": the relay wants what the settings do not give it.
        return RelayMisconfigured(
            f"{where} requires authentication or TLS first: {exc.smtp_code} "
            f"{reply_text(exc.smtp_error)}; set SMTP_SECURITY and SMTP_USERNAME/SMTP_PASSWORD"
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        reasons = "; ".join(
            f"{address}: {code} {reply_text(reply)}"
            for address, (code, reply) in exc.recipients.items()
        )
        if all(500 <= code < 600 for code, _ in exc.recipients.values()):
            return PermanentDeliveryError(f"every recipient was refused: {reasons}")
        return TransientDeliveryError(f"recipients refused: {reasons}")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = f"SMTP {exc.smtp_code} {reply_text(exc.smtp_error)}"
        if 500 <= exc.smtp_code < 600:
            return PermanentDeliveryError(text)
        return TransientDeliveryError(text)
    if isinstance(exc, smtplib.SMTPException | OSError):
        return TransientDeliveryError(f"SMTP connection to {where} failed: {exc!r}")
    return PermanentDeliveryError(f"unexpected error in the SMTP exchange: {exc!r}")


def _tls_hint(settings: WorkerSettings) -> str:
    if settings.smtp_security is SmtpSecurity.NONE:
        return " on a plain session (most relays offer it only after TLS: set SMTP_SECURITY)"
    return ""


def _reason(exc: BaseException) -> str:
    """The metric's label: which setting to look at."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate"
    if isinstance(exc, ssl.SSLError):
        return "tls_handshake"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "credentials"
    if isinstance(exc, smtplib.SMTPResponseException):
        return "auth_or_tls_required"
    text = str(exc)
    if "STARTTLS" in text:
        return "starttls_not_offered"
    if "SMTPUTF8" in text:
        return "smtputf8_not_offered"
    return "auth_not_offered"
