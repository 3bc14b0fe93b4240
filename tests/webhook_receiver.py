"""A real HTTP receiver for webhook events (http.server in a thread) that verifies each
one with the Standard Webhooks library, as a customer's endpoint would."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from tests.procs import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    event: dict[str, Any] | None


class Receiver:
    """Listens on 127.0.0.1:``port`` while started; ``secret`` verifies what comes in.
    ``answers`` scripts the status codes of the next requests (then 200), ``headers``
    extra response headers (a Location for a redirect)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.secret: str | None = None
        self.received: list[Received] = []
        self.answers: deque[int] = deque()
        self.extra_headers: dict[str, str] = {}
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/email"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified, event = receiver._verify(body, headers)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, verified, event))
                    status = receiver.answers.popleft() if receiver.answers else 200
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool, dict[str, Any] | None]:
        if self.secret is None:
            return False, None
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False, json.loads(body) if body else None
        return True, event

    def events_for(self, task_id: str) -> list[Received]:
        with self.lock:
            return [
                r for r in self.received if r.event and r.event["data"].get("task_id") == task_id
            ]
