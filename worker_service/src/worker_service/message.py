"""Build the MIME message for a SendEmailRequest.

Most mails are plain: ASCII addresses and subject on one line each, a short-lined ASCII
text body. Their headers and body are stored exactly as the standard library would
write them (``set_raw``), which skips parsing each value into a header object and
folding it back at send time: 260 -> ~70 µs a mail, measured (docs/performance.md).
Anything else (non-ASCII, long lines, an HTML part) goes through ``email``'s own
header and content machinery. Such a plain message is also written out here directly
(``message_bytes``) rather than by ``email``'s generator, which folds every header
again on every mail. tests/test_message.py holds both ways to the same bytes.
"""

from __future__ import annotations

import functools
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from shared_schemas.email import SendEmailRequest


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard header classes, made once per header name.

    ``HeaderRegistry.__getitem__`` builds a new class with ``type()`` on every lookup,
    several times per header set: 40 % of building a mail, measured (docs/performance.md).
    The classes hold no state, so one per name serves every message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# policy=SMTP: CRLF line endings, and header values with CR/LF are refused again here,
# a second guard after the payload model.
_POLICY = SMTP.clone(header_factory=_CachedHeaderRegistry())
_MAX_LINE = _POLICY.max_line_length or 78


@functools.lru_cache(maxsize=8)
def _from_value(mail_from: str) -> str:
    # MAIL_FROM is the same for every mail: parse and fold it once, and store the
    # folded text (EmailPolicy._fold writes a stored string's lines as they are).
    folded: str = _POLICY.header_factory("From", mail_from).fold(policy=_POLICY)
    return folded.partition(": ")[2].rstrip("\r\n")


def _as_is(name: str, value: str) -> bool:
    """Whether ``value`` is what the header parser and folder would write back: one
    line of printable ASCII without an encoded word (which the parser would decode)."""
    return (
        len(name) + 2 + len(value) <= _MAX_LINE
        and value.isascii()
        and value.isprintable()
        and "=?" not in value
    )


def _set(message: EmailMessage, name: str, value: str) -> None:
    if _as_is(name, value):
        message.set_raw(name, value)
    else:
        message[name] = value


def _seven_bit_body(text: str) -> str | None:
    """The text part's payload if ``set_content`` would send it as 7bit (ASCII, no
    line over the policy's maximum), in the form it stores; otherwise None."""
    if not text.isascii():
        return None
    lines = text.encode("ascii").splitlines()
    if max((len(line) for line in lines), default=0) > _MAX_LINE:
        return None
    return (b"\n".join(lines) + b"\n").decode("ascii")


# Parsed once: the generator reads both while it writes the message, and a stored
# header object is returned as it is, where a stored string is parsed on every read.
_TEXT_PLAIN = _POLICY.header_factory("Content-Type", 'text/plain; charset="utf-8"')
_SEVEN_BIT = _POLICY.header_factory("Content-Transfer-Encoding", "7bit")


def message_id_for(task_id: str, sender_address: str) -> str:
    """A Message-ID derived from the task id, so a redelivered task sends the same id."""
    domain = sender_address.rpartition("@")[2] or "localhost"
    return f"<{task_id}@{domain}>"


def build_message(
    email: SendEmailRequest, *, mail_from: str, message_id: str, date: datetime
) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message.set_raw("From", _from_value(mail_from))
    _set(message, "To", ", ".join(email.to))
    if email.cc:
        _set(message, "Cc", ", ".join(email.cc))
    if email.reply_to:
        _set(message, "Reply-To", email.reply_to)
    _set(message, "Subject", email.subject)
    _set(message, "Date", format_datetime(date))
    _set(message, "Message-ID", message_id)
    # Bcc is deliberately absent: its recipients travel only in the SMTP envelope.
    body = _seven_bit_body(email.body) if email.html is None else None
    if body is None:
        message.set_content(email.body)
        if email.html is not None:
            message.add_alternative(email.html, subtype="html")
    else:
        # What set_content stores for such a text, in the same order.
        message.set_raw("Content-Type", _TEXT_PLAIN)
        message.set_raw("Content-Transfer-Encoding", _SEVEN_BIT)
        message.set_raw("MIME-Version", "1.0")
        message.set_payload(body)
    return message


# The lines the generator writes for the two constant header objects: folding them is
# most of what the generator spends on a plain mail, and they never change.
_CONSTANT_LINES = {id(header): header.fold(policy=_POLICY) for header in (_TEXT_PLAIN, _SEVEN_BIT)}


def _plain_lines(message: EmailMessage) -> list[str] | None:
    """The lines ``message.as_bytes()`` writes, if ``message`` is plain: one text part
    held as ASCII text with LF line ends, and every header either one of the constant
    header objects or a stored string the policy writes as it is (``_fold``: ASCII
    lines within the policy's maximum). None for anything else."""
    payload = message.get_payload()
    if not isinstance(payload, str) or not payload.isascii() or "\r" in payload:
        return None
    lines: list[str] = []
    for name, value in message.raw_items():
        constant = _CONSTANT_LINES.get(id(value))
        if constant is not None:
            lines.append(constant)
            continue
        if hasattr(value, "name") or not value.isascii():
            return None  # a header object, or text the policy would encode
        parts = value.splitlines()
        if parts and len(name) + 2 + len(parts[0]) > _MAX_LINE:
            return None
        if any(len(part) > _MAX_LINE for part in parts[1:]):
            return None
        lines.append(f"{name}: {_POLICY.linesep.join(parts)}{_POLICY.linesep}")
    lines.append(_POLICY.linesep)
    lines.append(payload.replace("\n", _POLICY.linesep))
    return lines


def message_bytes(message: EmailMessage) -> bytes:
    """``message.as_bytes()`` with CRLF line ends, as SMTP's DATA carries it.

    A plain message (what ``build_message`` makes of most mails) is written here
    directly: the generator re-folds every header of every mail. 29 -> 4 µs for the
    bench's mail, measured.
    """
    lines = _plain_lines(message) if message.policy is _POLICY else None
    if lines is None:
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    return "".join(lines).encode("ascii")
