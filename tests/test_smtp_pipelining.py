"""The worker's SMTP client: RFC 2920 PIPELINING when the server offers it, the same
outcomes as smtplib's own dialogue when it does not. Real aiosmtpd servers, one each."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared_schemas.email import SendEmailRequest
from tests.smtp_sink import REFUSED_PREFIX, SmtpSink
from worker_service import relay_session, smtp
from worker_service.errors import PermanentDeliveryError, TransientDeliveryError
from worker_service.message import build_message
from worker_service.settings import WorkerSettings

# A body with lines that begin with a dot: DATA must double them on the wire.
BODY = "Hello,\n.\n..two dots\n.leading dot\nbye"


@pytest.fixture(params=[True, False], ids=["pipelining", "no pipelining"])
def sink(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    server = SmtpSink(pipelining=request.param)
    monkeypatch.setattr(relay_session, "_sessions", threading.local())  # none from another test
    if request.param:
        # The pipelined path must not fall back to smtplib's own dialogue.
        def refuse(*_: Any, **__: Any) -> None:
            raise AssertionError("send_message used although the server offers PIPELINING")

        monkeypatch.setattr(smtplib.SMTP, "send_message", refuse)
    yield server
    server.stop()


def _settings(sink: SmtpSink, mail_from: str = "Sender <sender@example.org>") -> WorkerSettings:
    return WorkerSettings(
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_security="none",
        mail_from=mail_from,
        smtp_timeout=5,
    )


def _deliver(sink: SmtpSink, to: list[str], **settings: str) -> smtp.Delivery:
    email = SendEmailRequest.model_validate({"to": to, "subject": "Pipelined", "body": BODY})
    config = _settings(sink, **settings)
    message = build_message(
        email, mail_from=config.mail_from, message_id="<t@example.org>", date=datetime.now(UTC)
    )
    seen: list[smtp.Delivery] = []
    delivery = smtp.deliver(
        message, email.envelope_recipients(), config, seen.append, time.monotonic() + 10
    )
    assert seen == [delivery]
    return delivery


def test_a_partly_refused_mail_is_delivered_to_the_rest_with_its_dots(sink: SmtpSink) -> None:
    refused = f"{REFUSED_PREFIX}x@example.com"
    delivery = _deliver(sink, ["a@example.com", refused, "b@example.com"])
    assert delivery.accepted == ["a@example.com", "b@example.com"]
    assert [(r.address, r.code) for r in delivery.rejected] == [(refused, 550)]
    [received] = sink.received_by("a@example.com")
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]
    assert received.mail_from == "sender@example.org"
    assert received.message.get_content().rstrip("\n") == BODY


def test_every_recipient_refused_fails_and_the_session_carries_the_next_mail(
    sink: SmtpSink,
) -> None:
    with pytest.raises(PermanentDeliveryError, match=re.escape("550 5.1.1")):
        _deliver(sink, [f"{REFUSED_PREFIX}1@example.com", f"{REFUSED_PREFIX}2@example.com"])
    assert _deliver(sink, ["after@example.com"]).accepted == ["after@example.com"]
    assert len(sink.received_by("after@example.com")) == 1


def test_a_4xx_for_the_only_recipient_is_transient(sink: SmtpSink) -> None:
    sink.reply_to_rcpt("busy@example.com", "452 4.2.2 Mailbox full")
    with pytest.raises(TransientDeliveryError, match=re.escape("452 4.2.2 Mailbox full")):
        _deliver(sink, ["busy@example.com"])
    assert sink.received_by("busy@example.com") == []


def test_a_refused_sender_fails_with_the_reply(sink: SmtpSink) -> None:
    sink.refuse_mail_from("blocked@example.org", "553 5.7.1 Sender not allowed")
    with pytest.raises(PermanentDeliveryError, match=re.escape("553 5.7.1 Sender not allowed")):
        _deliver(sink, ["c@example.com"], mail_from="blocked@example.org")
    assert sink.received_by("c@example.com") == []
    assert _deliver(sink, ["d@example.com"]).accepted == ["d@example.com"]


def test_a_relay_that_stalls_is_cut_off_at_the_attempts_deadline(sink: SmtpSink) -> None:
    """The watchdog ends an exchange at the attempt's deadline, well before the socket's
    own SMTP_TIMEOUT (30 s here), and the failure is transient: the mail is retried."""
    to = "stalled@example.com"
    stall = sink.stall_at_rcpt(to)
    email = SendEmailRequest.model_validate({"to": to, "subject": "Stalled", "body": "x"})
    config = _settings(sink).model_copy(update={"smtp_timeout": 30.0, "task_time_limit": 1})
    message = build_message(
        email, mail_from=config.mail_from, message_id="<s@example.org>", date=datetime.now(UTC)
    )
    started = time.monotonic()
    try:
        with pytest.raises(TransientDeliveryError, match=r"within TASK_TIME_LIMIT \(1s\)"):
            smtp.deliver(message, [to], config, lambda _: None, started + 1)
        assert time.monotonic() - started < 3
    finally:
        stall.release.set()
    assert sink.received_by(to) == []
