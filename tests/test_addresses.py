"""``EmailAddress`` gives the answers of pydantic's ``EmailStr``, value and error, whether
the address's domain was seen before or not (shared_schemas.addresses keeps each
accepted domain's check). The oracle is ``EmailStr`` itself."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError
from pydantic.networks import validate_email as library_validate_email

from shared_schemas import addresses
from shared_schemas.addresses import EmailAddress
from shared_schemas.email import SendEmailRequest

REFERENCE: TypeAdapter[str] = TypeAdapter(EmailStr)
OURS: TypeAdapter[str] = TypeAdapter(EmailAddress)

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
DOMAINS = [
    "example.com",
    "EXAMPLE.Com",
    "sub.example.co.uk",
    "x.io",
    "a-b.example.org",
    "xn--bcher-kva.ch",
    "bücher.ch",
    "BÜCHER.ch",
    "exämple.de",
    "123.example.com",
    "example.123",
    "localhost",
    "a.local",
    "mail.test",
    "example",
    "-example.com",
    "example-.com",
    "exa..mple.com",
    ".example.com",
    "example.com.",
    "a_b.example.com",
    "[127.0.0.1]",
    "example.c",
    "xn--.com",
    ("l" * 63 + ".") * 3 + "example.com",
    "l" * 64 + ".example.com",
    ("d" * 60 + ".") * 3 + "co",
    "",
]


def _local(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        atoms = [
            "".join(rng.choices(ATEXT, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 3))
        ]
        return ".".join(atoms)
    if kind < 0.65:
        return rng.choice(["Postmaster", "info", "SALES", "www", "Abuse", "noc"])
    if kind < 0.75:
        return "".join(rng.choices(ATEXT, k=rng.randint(60, 70)))
    if kind < 0.85:
        return rng.choice(["a..b", ".a", "a.", "", "a b", '"quoted"', '"a@b"', "Ünï", "ñ", "a\tb"])
    return "".join(rng.choices(ATEXT + ".", k=rng.randint(1, 20)))


def _addresses(rng: random.Random, count: int) -> Iterator[str]:
    for _ in range(count):
        local, domain = _local(rng), rng.choice(DOMAINS)
        address = f"{local}@{domain}"
        shape = rng.random()
        if shape < 0.05:
            address = f"Alice <{address}>"
        elif shape < 0.08:
            address = f" {address} "
        elif shape < 0.10:
            address = address.replace("@", "@@")
        elif shape < 0.12:
            address += "\n"
        elif shape < 0.14:
            address = local + "@" + "x" * (254 - len(local) - 6) + ".com"
        yield address


def _answer(adapter: TypeAdapter[str], value: str) -> tuple[str, Any]:
    try:
        return ("ok", adapter.validate_python(value))
    except ValidationError as exc:
        return ("error", [(e["type"], e["msg"]) for e in exc.errors()])


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """An empty domain cache, and a count of the checks that went to EmailStr's code."""
    addresses._accepted_domains.clear()
    full_checks = 0

    def counting(value: str) -> tuple[str, str]:
        nonlocal full_checks
        full_checks += 1
        return library_validate_email(value)

    monkeypatch.setattr("shared_schemas.addresses.validate_email", counting)
    yield lambda: full_checks
    addresses._accepted_domains.clear()


def test_the_same_answers_as_emailstr_cold_and_cached(fresh_cache: Callable[[], int]) -> None:
    rng = random.Random(20261202)
    checked = 0
    for address in _addresses(rng, 6_000):
        expected = _answer(REFERENCE, address)
        # Twice: the first may fill the cache, the second may be answered from it.
        assert _answer(OURS, address) == expected, address
        assert _answer(OURS, address) == expected, address
        checked += 2
    cached = checked - fresh_cache()
    # The cache was really used, for a good share of the addresses.
    assert cached > checked // 8, (cached, checked)


def test_a_new_local_part_at_a_known_domain_is_answered_from_the_cache(
    fresh_cache: Callable[[], int],
) -> None:
    assert OURS.validate_python("alice@EXAMPLE.com") == "alice@example.com"
    assert fresh_cache() == 1
    assert OURS.validate_python("Bob.Smith+tag@EXAMPLE.com") == "Bob.Smith+tag@example.com"
    assert fresh_cache() == 1
    # Role names are lowercased by email_validator, so they go to it.
    assert OURS.validate_python("Postmaster@EXAMPLE.com") == "postmaster@example.com"
    assert fresh_cache() == 2


def test_a_domain_refused_once_is_refused_again(fresh_cache: Callable[[], int]) -> None:
    for _ in range(2):
        with pytest.raises(ValidationError, match="special-use or reserved"):
            OURS.validate_python("alice@printer.local")
    assert fresh_cache() == 2


def test_the_request_model_documents_addresses_as_emailstr_did() -> None:
    schema = SendEmailRequest.model_json_schema()
    assert schema["properties"]["to"]["items"] == {"type": "string", "format": "email"}
    reply_to = schema["properties"]["reply_to"]["anyOf"][0]
    assert reply_to == {"type": "string", "format": "email"}
