"""``EmailAddress`` gives the answers of pydantic's ``EmailStr``, value and error, whether
the address's domain was seen before or not (shared_schemas.addresses keeps each
accepted domain's check). The oracle is ``EmailStr`` itself, but for two differences:
a display name is kept (``Alice <alice@example.com>``), and special-use domains can be
allowed (ALLOWED_SPECIAL_USE_DOMAINS)."""

from __future__ import annotations

import random
import re
import string
import timeit
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


@pytest.fixture(autouse=True)
def library_defaults() -> Iterator[None]:
    """Every test starts and ends with no special-use domain allowed."""
    addresses.allow_special_use_domains(())
    yield
    addresses.allow_special_use_domains(())


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
        if expected[0] == "ok" and address.startswith("Alice <"):
            expected = ("ok", f"Alice <{expected[1]}>")  # the display name is kept
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


class _Forgetful(dict[str, str]):
    """A domain cache that remembers nothing: every address goes to EmailStr's code."""

    def __setitem__(self, key: str, value: str) -> None:
        pass


def test_the_domain_cache_saves_more_than_a_quarter_of_validating_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fast path stays only while it saves 25 % of what it speeds up (docs/design.md,
    "Fast paths and the 25 % bar"): here, validating addresses at repeated domains, the
    same ones with the cache and without. It saves ~97 % (a ratio of 0.02-0.04)."""
    rng = random.Random(17)
    domains = [f"shop{i}.example.com" for i in range(20)] + ["gmail.com", "outlook.com"]
    batch = [f"user{rng.randrange(10**9)}@{rng.choice(domains)}" for _ in range(300)]

    def validate_batch() -> None:
        for address in batch:
            OURS.validate_python(address)

    addresses._accepted_domains.clear()
    validate_batch()
    cached = min(timeit.repeat(validate_batch, number=1, repeat=5))
    monkeypatch.setattr(addresses, "_accepted_domains", _Forgetful())
    uncached = min(timeit.repeat(validate_batch, number=1, repeat=5))
    ratio = cached / uncached
    print(f"with the cache / without: {ratio:.3f}")
    assert ratio <= 0.75, f"the domain cache saves only {1 - ratio:.0%} of address validation"


def test_the_request_model_documents_addresses_as_emailstr_did() -> None:
    schema = SendEmailRequest.model_json_schema()
    assert schema["properties"]["to"]["items"] == {"type": "string", "format": "email"}
    reply_to = schema["properties"]["reply_to"]["anyOf"][0]
    assert reply_to == {"type": "string", "format": "email"}


# Display names.

NAMED = {
    # given -> kept, in canonical form
    "Alice <alice@EXAMPLE.com>": "Alice <alice@example.com>",
    "  Alice   Smith   <alice@example.com> ": "Alice Smith <alice@example.com>",
    '"Smith, Alice" <alice@example.com>': '"Smith, Alice" <alice@example.com>',
    '"Alice" <alice@example.com>': "Alice <alice@example.com>",
    "Dr. Who <who@example.com>": '"Dr. Who" <who@example.com>',
    '"a \\"quoted\\" word" <q@example.com>': '"a \\"quoted\\" word" <q@example.com>',
    '"back\\\\slash" <b@example.com>': '"back\\\\slash" <b@example.com>',
    '"(not) <a> comment;:@[]" <c@example.com>': '"(not) <a> comment;:@[]" <c@example.com>',
    "O'Neil <o@example.com>": "O'Neil <o@example.com>",
    "Jöhn Dœ <john@exämple.de>": "Jöhn Dœ <john@exämple.de>",
    '"Zoë ☃" <z@example.com>': '"Zoë ☃" <z@example.com>',
    "<bare@example.com>": "bare@example.com",
    '" " <blank@example.com>': "blank@example.com",
}


@pytest.mark.parametrize(("given", "kept"), list(NAMED.items()), ids=list(NAMED))
def test_a_display_name_is_kept_and_reads_back_as_itself(given: str, kept: str) -> None:
    assert OURS.validate_python(given) == kept
    # The worker validates the payload again: the value must come back unchanged.
    assert OURS.validate_python(kept) == kept
    # The address is EmailStr's answer for the whole value (it drops the name).
    assert addresses.addr_spec(kept) == REFERENCE.validate_python(given)


@pytest.mark.parametrize("kept", [k for k in NAMED.values() if "<" in k])
def test_a_kept_name_parses_as_the_same_header_address(kept: str) -> None:
    from email.headerregistry import Address, AddressHeader
    from email.policy import SMTP

    header = SMTP.header_factory("To", f"{kept}, other@example.com")
    assert isinstance(header, AddressHeader)
    first, other = header.addresses
    assert isinstance(first, Address)
    assert first.addr_spec == addresses.addr_spec(kept)
    expected_name = kept.rpartition(" <")[0]
    if expected_name.startswith('"'):
        expected_name = expected_name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    assert first.display_name == expected_name
    assert other.addr_spec == "other@example.com"
    assert not header.defects  # type: ignore[attr-defined]  # typeshed lacks it


REFUSED_NAMES = {
    "CRLF": ("Eve\r\nBcc: x <eve@example.com>", "Carriage return and line feed"),
    "NUL": ('"Eve\x00" <eve@example.com>', "control characters"),
    "tab": ('"Eve\tSmith" <eve@example.com>', "control characters"),
    "line separator": ('"Eve\u2028Bcc: x" <eve@example.com>', "control characters"),
    "next line": ("Eve\x85Smith <eve@example.com>", "control characters"),
    "encoded word": ("=?utf-8?q?a=0D=0ABcc=3A_x?= <eve@example.com>", '"=?"'),
    "quoted encoded word": ('"=?utf-8?q?Bob?=" <eve@example.com>', '"=?"'),
    "two addresses in one": ('"a" <a@example.com>, "b" <b@example.com>', "must be escaped"),
    "too long": (f'"{"x" * 257}" <eve@example.com>', "longer than 256"),
    "bad address": ("Alice <alice@>", "There must be something after the @-sign"),
    "nested": ("Alice <Bob <bob@example.com>>", "display name and angle brackets"),
}


@pytest.mark.parametrize(("given", "reason"), list(REFUSED_NAMES.values()), ids=list(REFUSED_NAMES))
def test_a_name_that_could_break_a_header_is_refused(given: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OURS.validate_python(given)
    [error] = caught.value.errors()
    assert error["type"] == "value_error"
    assert error["msg"].startswith("value is not a valid email address: ")
    assert reason in error["msg"]


def test_a_named_address_at_a_known_domain_is_answered_from_the_cache(
    fresh_cache: Callable[[], int],
) -> None:
    assert OURS.validate_python("alice@EXAMPLE.com") == "alice@example.com"
    assert OURS.validate_python("Bob <bob@EXAMPLE.com>") == "Bob <bob@example.com>"
    assert OURS.validate_python('"Carol, C." <carol@EXAMPLE.com>') == (
        '"Carol, C." <carol@example.com>'
    )
    assert fresh_cache() == 1
    # Still checked on the whole value first, as EmailStr does.
    with pytest.raises(ValidationError, match="Carriage return"):
        OURS.validate_python("Bob\r\n <bob@EXAMPLE.com>")


def test_the_envelope_takes_bare_addresses_once_and_the_headers_keep_the_names() -> None:
    email = SendEmailRequest.model_validate(
        {
            "to": ["Alice <alice@example.com>", '"Smith, Bob" <bob@example.com>'],
            "cc": "ALICE <Alice@example.com>",
            "bcc": ["Audit <audit@example.com>", "bob@example.com"],
            "reply_to": "Support <support@example.org>",
            "subject": "s",
            "body": "b",
        }
    )
    assert email.to == ["Alice <alice@example.com>", '"Smith, Bob" <bob@example.com>']
    assert email.cc == ["ALICE <Alice@example.com>"]
    assert email.reply_to == "Support <support@example.org>"
    assert email.envelope_recipients() == [
        "alice@example.com",
        "bob@example.com",
        "audit@example.com",
    ]
    # What the worker receives and validates again is the same email.
    again = SendEmailRequest.model_validate_json(email.model_dump_json())
    assert again == email


# Special-use domains.

SPECIAL_USE_REFUSAL = "special-use or reserved name"


def _accepts(address: str) -> bool:
    """Whether ``address`` is accepted; a refusal must be for its special-use domain."""
    kind, answer = _answer(OURS, address)
    if kind == "ok":
        return True
    assert any(SPECIAL_USE_REFUSAL in msg for _, msg in answer), answer
    return False


def test_special_use_domains_are_refused_unless_allowed() -> None:
    assert not _accepts("alice@corp.local")
    addresses.allow_special_use_domains("corp.local, home.arpa")
    assert OURS.validate_python("alice@corp.local") == "alice@corp.local"
    assert OURS.validate_python("Alice <alice@MAIL.Corp.Local>") == "Alice <alice@mail.corp.local>"
    assert _accepts("nas@home.arpa")
    # The rest of the special-use names, and of .local, stay refused.
    for other in ["printer.local", "corp.local.evil.local", "x.arpa", "x.test"]:
        assert not _accepts(f"alice@{other}"), other
    assert not _accepts("alice@notcorp.local")
    assert _answer(OURS, "alice@localhost")[0] == "error"  # no period: refused anyway
    # Unconfigured again: refused again, even though the domain's check was cached.
    addresses.allow_special_use_domains(())
    assert not _accepts("alice@corp.local")


def test_other_domains_are_unaffected_by_the_setting() -> None:
    rng = random.Random(17)
    sample = list(_addresses(rng, 1_500))
    # EmailStr's answers (the library's list is process-wide) before allowing anything.
    expected = {address: _answer(OURS, address) for address in sample}
    addresses.allow_special_use_domains(["corp.local", "mail.test"])
    for address in sample:
        if "corp.local" in address or "mail.test" in address:
            continue
        assert _answer(OURS, address) == expected[address], address
    assert OURS.validate_python("x@mail.test") == "x@mail.test"
    assert not _accepts("x@a.local")


def test_an_internationalized_domain_is_allowed_in_its_ascii_form() -> None:
    addresses.allow_special_use_domains(["xn--bcher-kva.local"])
    assert OURS.validate_python("alice@bücher.local") == "alice@bücher.local"
    assert OURS.validate_python("alice@xn--bcher-kva.local") == "alice@bücher.local"
    assert not _accepts("alice@bucher.local")


def test_the_worker_refuses_no_special_use_domain() -> None:
    addresses.allow_every_special_use_domain()
    for domain in ["printer.local", "home.arpa", "x.test", "y.onion", "a.localhost"]:
        assert OURS.validate_python(f"alice@{domain}") == f"alice@{domain}"
    # Every other check still holds.
    assert _answer(OURS, "alice@example")[0] == "error"
    assert _answer(OURS, "alice@x..local")[0] == "error"


def test_the_setting_is_checked_when_the_api_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from api_service.settings import ApiSettings

    monkeypatch.setenv("API_KEYS", "k")
    monkeypatch.setenv("ALLOWED_SPECIAL_USE_DOMAINS", " Corp.Local,home.arpa,, corp.local ")
    assert ApiSettings().allowed_special_use_domains == ("corp.local", "home.arpa")
    monkeypatch.delenv("ALLOWED_SPECIAL_USE_DOMAINS")
    assert ApiSettings().allowed_special_use_domains == ()
    for bad, reason in [
        ("example.com", "is not a special-use domain"),
        ("corp..local", "is not a domain name"),
        ("*.local", "is not a domain name"),
        ("bücher.local", "xn-- form"),
    ]:
        monkeypatch.setenv("ALLOWED_SPECIAL_USE_DOMAINS", bad)
        with pytest.raises(ValidationError, match=re.escape(reason)):
            ApiSettings()
