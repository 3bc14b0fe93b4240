"""Which webhook URLs and addresses may be called: the rule both services apply.

An endpoint is a caller's URL that the worker POSTs to from inside the deployment's
network, so a URL naming (or resolving to) a loopback, private or link-local address
would let any API key reach internal services. The API checks at registration and the
worker again at every delivery, on the addresses it then connects to (DNS may have
changed meanwhile); ``WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`` lifts the rule, for an
intranet or tests (docs/security-and-observability.md, "Webhook endpoints").
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048

# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(address: str | IpAddress) -> str | None:
    """Why ``address`` may not be a webhook's target ("loopback", "private", ...), or
    None for a public address. IPv6 forms that embed an IPv4 address (IPv4-mapped,
    6to4, Teredo, NAT64) are judged by the address they embed."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link-local"
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a webhook endpoint before any name is resolved, or
    None: http or https, a host, no credentials, no fragment."""
    if not url.isascii():
        return (
            "the URL must be ASCII: write an internationalized host in its xn-- form and "
            "percent-encode the rest"
        )
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme.lower() not in SCHEMES:
        return "the URL must start with https:// or http://"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry credentials (user:password@); the signature authenticates"
    if parts.fragment:
        return "the URL must not have a #fragment"
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return "the URL must not contain spaces or control characters"
    return None


def default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80
