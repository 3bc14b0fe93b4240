"""Check a webhook URL's host at registration: it must resolve, and only to public
addresses unless WEBHOOK_ALLOW_PRIVATE_NETWORKS (shared_schemas.webhook_urls). The
worker checks again at every call; this check lets a caller hear at once, with a 422,
about an endpoint that would never be called."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from shared_schemas.webhook_urls import default_port, refusal


class TargetRefused(Exception):
    """The URL's host cannot be a webhook's target; the message says why."""


class TargetCheck:
    def __init__(self, allow_private: bool, timeout: float) -> None:
        self._allow_private = allow_private
        self._timeout = timeout

    async def check(self, url: str) -> None:
        """TargetRefused unless ``url``'s host resolves, within the timeout, to
        addresses a webhook may reach."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or default_port(parts.scheme)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise TargetRefused(
                f"the host {host} did not resolve within {self._timeout:g}s"
            ) from None
        except (OSError, UnicodeError) as exc:
            raise TargetRefused(f"the host {host} does not resolve: {exc}") from None
        if self._allow_private:
            return
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            why = refusal(address.split("%", 1)[0])
            if why is not None:
                raise TargetRefused(
                    f"the host {host} resolves to {address}, a {why} address: webhooks "
                    "reach public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
                )
