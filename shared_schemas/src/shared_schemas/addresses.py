"""Email addresses, validated as pydantic's ``EmailStr``, with each domain's check
remembered, a display name kept, and special-use domains allowed by configuration.

``EmailStr`` runs ``email_validator`` on every address, and most of that is the domain
(IDNA, per-character Unicode checks): ~270,000 instructions per address, 16 % of a
submission in the API, and paid again in the worker. The cache saves ~97 % of validating
an address at a known domain, over the bar a fast path must clear (docs/design.md, "Fast
paths and the 25 % bar", with the numbers). The domain's
check is a pure function of the domain, and real traffic repeats domains far more than
addresses. So an address whose part before the @ is a plain ASCII dot-atom, at a
domain ``EmailStr`` already accepted, is answered from that: ``email_validator`` keeps
such a local part as it is, and the address's lengths are checked here against the same
limits. Anything else (quoting, Unicode, the role names ``email_validator`` lowercases,
anything near a length limit, every error) goes through ``EmailStr``'s own validation,
which also fills the cache. tests/test_addresses.py holds the two to the same answers,
value and error, on thousands of addresses.

**Display names.** ``EmailStr`` takes ``Name <user@example.com>`` apart and returns the
address alone; here the name is kept: the value is ``Name <user@example.com>`` in a
canonical form (the name quoted, RFC 5322, where it is not a run of plain words), which
reads back as itself, so the worker's validation of the payload returns it unchanged.
The worker writes it into the To/Cc/Reply-To headers as it is (the standard library
encodes a non-ASCII name); :func:`addr_spec` gives the bare address, the only thing the
SMTP envelope and the result's ``accepted`` list carry. A name cannot smuggle a header
in: line breaks, NUL and every other control character are refused, and so is ``=?``
(mail parsers decode an encoded word even inside quotes, line breaks included).

**Special-use domains.** ``email_validator`` refuses the IANA special-use names
(``local``, ``arpa``, ``test``, ``localhost``, …) and their subdomains.
:func:`allow_special_use_domains` (the API's ``ALLOWED_SPECIAL_USE_DOMAINS``) lets some
through, ``corp.local`` say: the library's own mechanism is its module-level
``SPECIAL_USE_DOMAIN_NAMES`` list, so the names that cover a configured domain (``local``)
are taken out of it, and refused here instead, with the library's words, except under
the configured domains. The setting is process-wide: call it once, at start-up.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated

import email_validator
from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import MAX_EMAIL_LENGTH, pretty_email_regex, validate_email
from pydantic_core import PydanticCustomError

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

# ``Name <addr>`` as pydantic's validate_email takes it apart: (unquoted name, quoted
# name, address). Its quoted name is anything between the first and the last quote.
_NAMED = pretty_email_regex
# A name written without quotes: words pydantic reads unquoted that hold no RFC 5322
# special (so not ".", which pydantic would read but the mail header would not).
_WORD = r"[\w!#$%&'*+\-/=?^`{|}~]+"
_BARE_NAME = re.compile(rf"{_WORD}(?: {_WORD})*")
_QUOTED_STRING_CONTENT = re.compile(r'(?:[^"\\]|\\.)*', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
MAX_DISPLAY_NAME_LENGTH = 256
# Control characters (CR, LF, NUL, tab, ...), surrogates, line and paragraph separators.
_NOT_IN_A_NAME = frozenset({"Cc", "Cs", "Zl", "Zp"})

# email_validator's special-use names as shipped, and the state allow_special_use_domains
# sets: the names taken out of the library's list and refused here instead, and the
# domains allowed under them.
_SPECIAL_USE_NAMES = tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)
_SPECIAL_USE_REASON = (
    "The part after the @-sign is a special-use or reserved name that cannot be used with email."
)
_refused_here: tuple[str, ...] = ()
_allowed_domains: tuple[str, ...] = ()
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def validate_address(value: str) -> str:
    """The normalized address, as ``EmailStr`` returns it, with its display name if it
    has one (``Name <addr>``); or a ``value_error``."""
    named = _NAMED.fullmatch(value) if "<" in value else None
    bare = value if named is None else named.group(3).strip()
    plain = _PLAIN.fullmatch(bare)
    # A named value's length and line breaks are checked on the whole value first.
    if plain is not None and (
        named is None
        or (len(value) <= MAX_EMAIL_LENGTH and "\r" not in value and "\n" not in value)
    ):
        local, domain = plain.groups()
        normalized_domain = _accepted_domains.get(domain)
        if normalized_domain is not None and _answerable(local, domain, normalized_domain):
            return _with_name(named, f"{local}@{normalized_domain}")
    normalized = validate_email(value)[1]  # EmailStr's own check; raises its error
    if _refused_here:
        _check_special_use(normalized)
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
    return _with_name(named, normalized)


def _answerable(local: str, domain: str, normalized_domain: str) -> bool:
    longest = max(len(domain), len(normalized_domain))
    return (
        len(local) <= _LOCAL_MAX
        and len(local) + 1 + longest <= _ADDRESS_MAX
        and local.lower() not in _ROLE_NAMES
    )


def addr_spec(address: str) -> str:
    """The bare ``user@domain`` of a validated address, with or without a display name:
    what the SMTP envelope carries."""
    # The address itself holds no "<" (email_validator refuses quoted local parts).
    return address[address.rindex("<") + 1 : -1] if address.endswith(">") else address


def _invalid(reason: str) -> PydanticCustomError:
    return PydanticCustomError(
        "value_error", "value is not a valid email address: {reason}", {"reason": reason}
    )


def _with_name(named: re.Match[str] | None, address: str) -> str:
    """``address`` with the display name of ``named``, in canonical form, if it has one."""
    if named is None:
        return address
    unquoted, quoted, _ = named.groups()
    if quoted is not None:
        if not _QUOTED_STRING_CONTENT.fullmatch(quoted):
            raise _invalid('A quote inside a quoted display name must be escaped as \\".')
        name = _QUOTED_PAIR.sub(r"\1", quoted)
    else:
        name = unquoted or ""
    if not name.isprintable() and any(unicodedata.category(ch) in _NOT_IN_A_NAME for ch in name):
        raise _invalid(
            "The display name must be one line of text: line breaks, NUL and other "
            "control characters are not allowed."
        )
    name = " ".join(name.split())
    if not name:
        return address
    if "=?" in name:
        raise _invalid(
            'The display name cannot contain "=?" (mail programs would decode it as an '
            "encoded word). Send the name as plain text: it is encoded as needed."
        )
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise _invalid(f"The display name is longer than {MAX_DISPLAY_NAME_LENGTH} characters.")
    if not _BARE_NAME.fullmatch(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _under(domain: str, names: Iterable[str]) -> bool:
    return any(domain == name or domain.endswith("." + name) for name in names)


def _check_special_use(normalized: str) -> None:
    """Refuse, as email_validator would have, an address under a special-use name taken
    out of its list, unless it is under an allowed domain."""
    domain = normalized.rpartition("@")[2]
    if not _under(domain, _refused_here):
        return
    if not domain.isascii():  # the allowed domains are in their ASCII (xn--) form
        try:
            checked = email_validator.validate_email(normalized, check_deliverability=False)
        except email_validator.EmailNotValidError as exc:
            raise _invalid(str(exc)) from None
        domain = checked.ascii_domain
    if not _under(domain, _allowed_domains):
        raise _invalid(_SPECIAL_USE_REASON)


def special_use_domains(domains: str | Iterable[str]) -> tuple[str, ...]:
    """``domains`` (a list, or comma-separated) lowercased, each once; ``ValueError`` for
    one that is not an ASCII domain name under one of email_validator's special-use
    names (only those need allowing)."""
    items = domains.split(",") if isinstance(domains, str) else [str(item) for item in domains]
    checked: list[str] = []
    for item in items:
        domain = item.strip().lower()
        if not domain:
            continue
        if len(domain) > 253 or not _DOMAIN_NAME.fullmatch(domain):
            raise ValueError(
                f"{item.strip()!r} is not a domain name: ASCII letters, digits and hyphens "
                "in labels separated by dots (an internationalized name in its xn-- form)"
            )
        if not _under(domain, _SPECIAL_USE_NAMES):
            raise ValueError(
                f"{domain!r} is not a special-use domain; addresses there need no allowing "
                f"(the special-use names: {', '.join(_SPECIAL_USE_NAMES)})"
            )
        if domain not in checked:
            checked.append(domain)
    return tuple(checked)


def allow_special_use_domains(domains: str | Iterable[str]) -> None:
    """Accept addresses at these special-use domains and their subdomains from now on,
    in this process; every other special-use domain stays refused. An empty list
    restores the library's refusals. Call it once, at start-up (it is not thread-safe).
    ``ValueError`` as :func:`special_use_domains`."""
    global _refused_here, _allowed_domains
    allowed = special_use_domains(domains)
    refused_here = tuple(
        name for name in _SPECIAL_USE_NAMES if any(_under(d, [name]) for d in allowed)
    )
    email_validator.SPECIAL_USE_DOMAIN_NAMES[:] = [
        name for name in _SPECIAL_USE_NAMES if name not in refused_here
    ]
    _refused_here, _allowed_domains = refused_here, allowed
    _accepted_domains.clear()


def allow_every_special_use_domain() -> None:
    """Refuse no special-use domain in this process: for a consumer of payloads the API
    has already checked against its ALLOWED_SPECIAL_USE_DOMAINS (the worker), so that a
    different or changed setting there never fails a mail the API accepted."""
    global _refused_here, _allowed_domains
    email_validator.SPECIAL_USE_DOMAIN_NAMES[:] = []
    _refused_here, _allowed_domains = (), ()
    _accepted_domains.clear()


EmailAddress = Annotated[
    str,
    AfterValidator(validate_address),
    WithJsonSchema({"type": "string", "format": "email"}),
]
"""``pydantic.EmailStr``'s values, errors and JSON schema, except that a display name is
kept (``Name <user@example.com>``) and special-use domains may be allowed."""
