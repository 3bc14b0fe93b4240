"""The benchmark's minimal SMTP sink speaks SMTP well enough for any client: each
command answered in order, pipelined or split across packets, and every mail counted
once (bench/smtp_sink.py). The benchmark's figures rest on its count."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from bench.smtp_sink import SmtpSink
from devtools.procs import wait_for


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink("minimal")
    yield server
    server.stop()


def _mail(body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "x"
    message.set_content(body)
    return message


def test_smtplib_sends_several_mails_on_one_session(sink: SmtpSink) -> None:
    sink.reset()
    bodies = ["plain", ".\nA line holding only a dot, which the client stuffs.\n.", ""]
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        code, _features = client.ehlo("client.example")
        assert code == 250
        assert client.has_extn("pipelining")
        for body in bodies:
            refused = client.send_message(_mail(body))
            assert refused == {}
        assert client.noop()[0] == 250
    assert sink.count == len(bodies)


def _read_replies(conn: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = conn.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return [line for line in data.split(b"\r\n") if line]


def test_pipelined_commands_split_byte_by_byte_are_answered_in_order(sink: SmtpSink) -> None:
    sink.reset()
    with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as conn:
        assert _read_replies(conn, 1)[0].startswith(b"220 ")
        script = (
            b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\nDATA\r\n"
        )
        for byte in script:
            conn.sendall(bytes([byte]))
        replies = _read_replies(conn, 10)
        assert replies[-4:] == [
            b"250 OK",
            b"250 OK",
            b"250 OK",
            b"354 End data with <CR><LF>.<CR><LF>",
        ]
        for byte in b"Subject: y\r\n\r\nbody\r\n..stuffed\r\n.\r\nQUIT\r\n":
            conn.sendall(bytes([byte]))
        assert _read_replies(conn, 2) == [b"250 2.0.0 Accepted", b"221 Bye"]
    wait_for(lambda: sink.count == 1, timeout=5, what="the mail counted")
    assert sink.count == 1
