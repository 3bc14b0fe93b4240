"""Email addresses, validated exactly as pydantic's ``EmailStr``, with each domain's check
remembered.

``EmailStr`` runs ``email_validator`` on every address, and most of that is the domain
(IDNA, per-character Unicode checks): ~270,000 instructions per address, 16 % of a
submission in the API, and paid again in the worker (docs/performance.md). The domain's
check is a pure function of the domain, and real traffic repeats domains far more than
addresses. So an address whose part before the @ is a plain ASCII dot-atom, at a
domain ``EmailStr`` already accepted, is answered from that: ``email_validator`` keeps
such a local part as it is, and the address's lengths are checked here against the same
limits. Anything else (quoting, Unicode, display names, the role names
``email_validator`` lowercases, anything near a length limit, every error) goes through
``EmailStr``'s own validation, which also fills the cache. tests/test_addresses.py holds
the two to the same answers, value and error, on thousands of addresses.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_PLAIN = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)")
# email_validator's limits (RFC 5321 §4.5.3.1): what could reach them is not answered here.
_LOCAL_MAX = 64
_ADDRESS_MAX = 254
# Local parts email_validator lowercases (RFC 2142), so they are not kept as they are.
_ROLE_NAMES = frozenset(
    {"info", "marketing", "sales", "support", "abuse", "noc", "security", "postmaster"}
    | {"hostmaster", "usenet", "news", "webmaster", "www", "uucp", "ftp"}
)
_CACHE_LIMIT = 10_000

# The domain as given -> its normalized form, for domains EmailStr accepted.
_accepted_domains: dict[str, str] = {}


def validate_address(value: str) -> str:
    """The normalized address, as ``EmailStr`` returns it, or its ``value_error``."""
    plain = _PLAIN.fullmatch(value)
    if plain is not None:
        local, domain = plain.groups()
        normalized_domain = _accepted_domains.get(domain)
        if normalized_domain is not None and _answerable(local, domain, normalized_domain):
            return f"{local}@{normalized_domain}"
    normalized = validate_email(value)[1]  # EmailStr's own check; raises its error
    if plain is not None:
        local, domain = plain.groups()
        checked_local, _, normalized_domain = normalized.rpartition("@")
        # Remembered only where the library kept the local part as it was and the
        # domain came out ASCII (so its IDNA form is itself, for the length checks).
        if (
            checked_local == local
            and normalized_domain.isascii()
            and _answerable(local, domain, normalized_domain)
        ):
            if len(_accepted_domains) >= _CACHE_LIMIT:
                _accepted_domains.clear()
            _accepted_domains[domain] = normalized_domain
    return normalized


def _answerable(local: str, domain: str, normalized_domain: str) -> bool:
    longest = max(len(domain), len(normalized_domain))
    return (
        len(local) <= _LOCAL_MAX
        and len(local) + 1 + longest <= _ADDRESS_MAX
        and local.lower() not in _ROLE_NAMES
    )


EmailAddress = Annotated[
    str,
    AfterValidator(validate_address),
    WithJsonSchema({"type": "string", "format": "email"}),
]
"""A drop-in for ``pydantic.EmailStr``: the same values, errors and JSON schema."""
