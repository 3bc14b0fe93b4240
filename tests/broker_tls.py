"""A check both services' broker transports must pass."""

from __future__ import annotations

import ssl
from typing import Any

import redis


def assert_rediss_keeps_verified_tls(connection: Any, transport: type[Any]) -> None:
    """kombu turns TLS on from the URL's ``ssl_*`` query (which the settings add for
    rediss://), not from the transport's name; a transport of ours must still get it."""
    assert isinstance(connection.transport, transport)
    assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert (connection.hostname, connection.port) == ("redis.example", 6380)
    assert connection.transport.Channel.connection_class_ssl is redis.SSLConnection
