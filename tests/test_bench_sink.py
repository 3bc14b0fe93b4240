"""The benchmark's minimal SMTP sink speaks SMTP well enough for any client: each
command answered in order, pipelined or split across packets, and every mail counted
once (bench/smtp_sink.py). The benchmark's figures rest on its count and its arrival
times; its relay rounds put it behind a latency proxy (bench/latency_proxy.py)."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from bench.latency_proxy import LatencyProxy
from bench.smtp_sink import SmtpSink
from devtools.procs import wait_for

pytestmark = pytest.mark.integration


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


def test_each_mails_arrival_time_is_kept_in_order(sink: SmtpSink) -> None:
    sink.reset()
    before = time.time()
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        for body in ("one", "two", "three"):
            client.send_message(_mail(body))
    wait_for(lambda: sink.count == 3, timeout=5, what="three mails counted")
    arrivals = sink.arrivals()
    assert len(arrivals) == 3
    assert before <= arrivals[0] <= arrivals[1] <= arrivals[2] <= time.time()
    assert sink.window() == (arrivals[0], arrivals[2])
    sink.reset()
    assert sink.arrivals() == []


def test_the_latency_proxy_delays_each_way_in_order_without_serializing(sink: SmtpSink) -> None:
    """The relay rounds of the benchmark drain through bench.latency_proxy: 25 ms each
    way is a 50 ms round trip, a chunk read at t goes out at t + 25 ms whatever else is
    in flight, and the replies come back in the order of their commands."""
    proxy = LatencyProxy(sink.port, 0.025)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            started = time.monotonic()
            assert _read_replies(conn, 1)[0].startswith(b"220 ")
            # TCP's handshake, then the greeting: two round trips after connect().
            assert time.monotonic() - started >= 0.095
            started = time.monotonic()
            conn.sendall(b"NOOP\r\n")
            assert _read_replies(conn, 1) == [b"250 OK"]
            assert 0.049 <= time.monotonic() - started < 0.25
            # Five commands 10 ms apart: serialized behind one another they would take
            # five round trips; delayed each on its own, 40 ms plus one.
            started = time.monotonic()
            for command in (b"NOOP", b"XXXX", b"HELO c", b"XXXX", b"RSET"):
                conn.sendall(command + b"\r\n")
                time.sleep(0.01)
            replies = _read_replies(conn, 5)
            assert time.monotonic() - started < 0.2
            assert replies == [
                b"250 OK",
                b"502 Command not implemented",
                b"250 sink.bench.local",
                b"502 Command not implemented",
                b"250 OK",
            ]
    finally:
        proxy.stop()
    with pytest.raises(ValueError, match="loopback"):
        LatencyProxy(sink.port, 0.025, target_host="192.0.2.1")
