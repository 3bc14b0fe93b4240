"""The worker builds each mail as the standard library's email API does, and DATA
carries it as smtplib would (dot-stuffed, CRLF), for every shape of mail the contract
lets through: the oracle is EmailMessage with the SMTP policy and smtplib's own quoting.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError

from shared_schemas.email import SendEmailRequest
from worker_service.message import build_message
from worker_service.smtp import _wire_data

MESSAGE_ID = "<0b5f8a52-4c1e-4f4e-9d8f-3a2d1c7b6e01@example.com>"
SENDERS = [
    "Bench Sender <noreply@example.com>",
    "noreply@example.com",
    '"Doe, John" <john@example.com>',
    "Jöhn Dœ <john@example.com>",
    "A sender whose display name is long enough to be folded by the policy <x@example.com>",
]
LOCAL_PARTS = ["alice", "b.ob", "o'brien", "a+tag", "x/y=z", "{w}", "Ünï", "UPPER", "d" * 60]
DOMAINS = ["example.com", "sub.example.org", "exämple.de", "x.io"]
SUBJECTS = [
    "Bench",
    "Re: [ticket #1] done",
    "Grüße",
    "=?utf-8?q?looks_encoded?=",
    "  spaced ",
    "a  b",
    "x" * 90,
    "ends with space ",
    "é" * 30,
    "tab\there",
    'a (comment) and "quotes" and <angles>',
]
BODIES = [
    "Hello.",
    "line1\nline2\r\nline3",
    "x" * 100,
    "héllo",
    "a\n.\nb",
    "",
    "trailing\n\n",
    "\rcr only",
    "long " * 40,
    "\ttabbed\n  indented",
]


def _stdlib_message(email: SendEmailRequest, mail_from: str, date: datetime) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = mail_from
    message["To"] = ", ".join(email.to)
    if email.cc:
        message["Cc"] = ", ".join(email.cc)
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Subject"] = email.subject
    message["Date"] = date
    message["Message-ID"] = MESSAGE_ID
    message.set_content(email.body)
    if email.html is not None:
        message.add_alternative(email.html, subtype="html")
    return message


def _stdlib_wire(message: EmailMessage) -> bytes:
    """What smtplib's send_message puts in DATA for ``message``."""
    flat = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    quoted = re.sub(rb"(?m)^\.", b"..", flat)
    return (quoted if quoted.endswith(b"\r\n") else quoted + b"\r\n") + b".\r\n"


def _without_boundaries(wire: bytes) -> bytes:
    # Multipart boundaries are random per message.
    return re.sub(rb"={15}\d+==", b"BOUNDARY", wire)


def _random_requests(count: int) -> list[dict[str, Any]]:
    rnd = random.Random(20261202)

    def addresses(most: int) -> list[str]:
        return [
            f"{rnd.choice(LOCAL_PARTS)}@{rnd.choice(DOMAINS)}" for _ in range(rnd.randint(1, most))
        ]

    requests = []
    for _ in range(count):
        request: dict[str, Any] = {
            "to": addresses(8),
            "subject": rnd.choice(SUBJECTS),
            "body": rnd.choice(BODIES),
        }
        if rnd.random() < 0.3:
            request["cc"] = addresses(4)
        if rnd.random() < 0.2:
            request["reply_to"] = addresses(1)[0]
        if rnd.random() < 0.2:
            request["html"] = f"<p>{rnd.choice(BODIES)}</p>"
        requests.append(request)
    return requests


def test_the_wire_bytes_are_the_standard_librarys() -> None:
    date = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    checked = 0
    # 300 mails meet every subject, body and sender many times over; more found nothing
    # new and cost ~15 s of `make test-fast` on the 2-core machine.
    for n, request in enumerate(_random_requests(300)):
        try:
            email = SendEmailRequest.model_validate(request)
        except ValidationError:
            continue  # refused before it could reach the worker
        mail_from = SENDERS[n % len(SENDERS)]
        built = build_message(email, mail_from=mail_from, message_id=MESSAGE_ID, date=date)
        expected = _stdlib_message(email, mail_from, date)
        assert _without_boundaries(_wire_data(built)) == _without_boundaries(
            _stdlib_wire(expected)
        ), request
        checked += 1
    assert checked > 200


@pytest.mark.parametrize(
    "request_",
    [
        {"to": ["alice@example.com"], "subject": "Plain", "body": "Hi.\n"},
        {"to": ["ünï@exämple.de"], "subject": "Grüße", "body": "héllo", "html": "<b>x</b>"},
    ],
    ids=["plain", "international with html"],
)
def test_the_message_reads_back_as_sent(request_: dict[str, Any]) -> None:
    email = SendEmailRequest.model_validate(request_)
    date = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    built = build_message(email, mail_from=SENDERS[3], message_id=MESSAGE_ID, date=date)
    parsed = message_from_bytes(_wire_data(built)[: -len(b".\r\n")], policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["To"] == request_["to"][0]
    assert parsed["Subject"] == request_["subject"]
    assert parsed["From"].addresses[0].display_name == "Jöhn Dœ"
    assert parsed["Message-ID"] == MESSAGE_ID
    assert parsed["Date"].datetime == date
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").rstrip("\n") == request_["body"].rstrip("\n")


def test_display_names_are_written_as_the_standard_library_writes_them() -> None:
    date = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    ascii_names = {
        "to": ["Alice <alice@example.com>", '"Smith, Bob" <bob@example.com>'],
        "cc": ['"Dr. \\"Q\\" Who" <who@example.com>'],
        "bcc": "Audit <audit@example.com>",
        "reply_to": '"Support, Team" <support@example.org>',
        "subject": "Names",
        "body": "Hi.\n",
    }
    unicode_names = {**ascii_names, "cc": ["Zoë Ünï <zoe@exämple.de>"]}
    built = {}
    for label, request in (("ascii", ascii_names), ("unicode", unicode_names)):
        email = SendEmailRequest.model_validate(request)
        built[label] = build_message(email, mail_from=SENDERS[0], message_id=MESSAGE_ID, date=date)
        expected = _stdlib_message(email, SENDERS[0], date)
        assert _wire_data(built[label]) == _stdlib_wire(expected), label

    def read_back(label: str) -> EmailMessage:
        wire = _wire_data(built[label])
        assert b"audit@example.com" not in wire
        parsed = message_from_bytes(wire[: -len(b".\r\n")], policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        assert "Bcc" not in parsed
        return parsed

    def names(parsed: EmailMessage, header: str) -> list[tuple[str, str]]:
        return [(a.display_name, a.addr_spec) for a in parsed[header].addresses]

    ascii_mail, unicode_mail = read_back("ascii"), read_back("unicode")
    assert names(ascii_mail, "To") == [
        ("Alice", "alice@example.com"),
        ("Smith, Bob", "bob@example.com"),
    ]
    assert names(ascii_mail, "Cc") == [('Dr. "Q" Who', "who@example.com")]
    assert names(ascii_mail, "Reply-To") == [("Support, Team", "support@example.org")]
    assert names(unicode_mail, "Cc") == [("Zoë Ünï", "zoe@exämple.de")]


def test_a_retry_rebuilds_the_message_with_the_first_ones_date() -> None:
    """The relay took the first message a second after it was built, deferring one
    recipient: the retry, built from the result so far, carries the same Date header."""
    from shared_schemas.email import RejectedRecipient
    from worker_service import progress
    from worker_service.smtp import Delivery

    mail = SendEmailRequest.model_validate(
        {"to": ["alice@example.com", "carol@example.com"], "subject": "s", "body": "b"}
    )
    built = datetime(2026, 12, 3, 10, 26, 9, 990_000, tzinfo=UTC)
    first = build_message(mail, mail_from="a@example.org", message_id="<m@x>", date=built)
    carol = RejectedRecipient(address="carol@example.com", code=450, reason="Greylisted")
    delivery = Delivery(accepted=["alice@example.com"], deferred=[carol])
    so_far = progress.merged(None, delivery, "<m@x>", built)
    retry = build_message(mail, mail_from="a@example.org", message_id="<m@x>", date=so_far.sent_at)
    assert retry["Date"] == first["Date"]
