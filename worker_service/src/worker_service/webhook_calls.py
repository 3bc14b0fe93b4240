"""One signed POST of an event to a webhook endpoint, bounded in time, to public
addresses only (docs/design.md, "Webhook events").

- **Resolved and checked, then pinned**: the host is resolved once, every address it
  resolves to is checked (shared_schemas.webhook_urls), and the connection goes to one of
  those very addresses, so a name cannot resolve to a public address for the check and a
  private one for the connection. TLS still verifies the certificate for the host name.
- **No redirects**: a 3xx is a failed call, never followed, so a public endpoint cannot
  bounce the worker onto an internal address (the spec asks receivers for a 2xx).
- **One deadline for the whole call** (``WEBHOOK_TIMEOUT``): the name lookup waits at most
  that long, and the watchdog shuts the socket down when the deadline passes, so a
  receiver answering a byte at a time cannot hold a pool thread.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from shared_schemas.webhook_urls import default_port, refusal
from worker_service.watchdog import watchdog

USER_AGENT = "email-dispatch-webhooks/0.1"
# getaddrinfo has no timeout of its own: lookups run here and are waited for up to the
# call's deadline (a stuck one finishes in the background).
_lookups = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")
_TLS = ssl.create_default_context()


class Refused(Exception):
    """The endpoint resolves to an address webhooks may not reach."""


@dataclass(frozen=True)
class Answer:
    """How one call went: ``ok`` for a 2xx; else ``reason`` says why it failed."""

    ok: bool
    reason: str
    status: int | None = None


def signed_headers(secret: str, event_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, signed with ``secret`` (whsec_...)."""
    signature = Webhook(secret).sign(event_id, at.astimezone(UTC), body.decode())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool
) -> Answer:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or default_port(parts.scheme)
    try:
        addresses = resolve(host, port, deadline)
        if not allow_private:
            check(host, addresses)
    except Refused as exc:
        return Answer(False, str(exc))
    except (OSError, LookupTimeout) as exc:
        return Answer(False, f"could not resolve {host}: {exc or 'timed out'}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    conn = _PinnedConnection(host, port, addresses, parts.scheme.lower() == "https", deadline)
    try:
        with watchdog.guard(deadline, lambda: conn.sock):
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            status = response.status
    except (OSError, http.client.HTTPException) as exc:
        late = time.monotonic() >= deadline
        return Answer(False, f"no answer within {timeout:g}s" if late else _describe(exc))
    finally:
        conn.close()
    if 200 <= status < 300:
        return Answer(True, f"HTTP {status}", status)
    if 300 <= status < 400:
        return Answer(False, f"HTTP {status}: redirects are not followed", status)
    return Answer(False, f"HTTP {status}", status)


def resolve(host: str, port: int, deadline: float) -> list[str]:
    """The addresses ``host`` resolves to, in getaddrinfo's order, looked up until
    ``deadline`` at the latest."""
    future = _lookups.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    infos = future.result(timeout=max(deadline - time.monotonic(), 0.001))
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check(host: str, addresses: list[str]) -> None:
    """Refuse the host if any of its addresses is not public: the one the connection
    would pick is not known in advance."""
    for address in addresses:
        why = refusal(address.split("%", 1)[0])
        if why is not None:
            raise Refused(
                f"{host} resolves to {address}, a {why} address; webhooks reach public "
                "addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not valid: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _PinnedConnection(http.client.HTTPSConnection):
    """http.client's connection to ``host``, made to the addresses checked for it: the
    Host header and the TLS server name stay the host's."""

    def __init__(
        self, host: str, port: int, addresses: list[str], tls: bool, deadline: float
    ) -> None:
        # The shared context: http.client would load the system's CA certificates for
        # each connection otherwise (measured: ~150 ms a call).
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001), context=_TLS)
        # The Host header leaves out the scheme's own port only.
        self.default_port = 443 if tls else 80
        self._addresses = addresses
        self._tls = tls
        self._deadline = deadline

    def connect(self) -> None:
        last: OSError = OSError("no address")
        for address in self._addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            try:
                sock = socket.create_connection((address, self.port), timeout=left)
            except OSError as exc:
                last = exc
                continue
            if self._tls:
                sock = _TLS.wrap_socket(sock, server_hostname=self.host)
            self.sock = sock
            return
        raise last
