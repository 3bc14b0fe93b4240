"""What a mail carries besides its text: attachments, inline images, custom headers, and
the reference to a stored template that stands in for its subject and text.

Every limit is checked here, by the contract, so bad input is refused by the API with a
located 422 (``["body", "attachments", 0, "content"]``) and never reaches a worker; the
worker validates the same model again when the message arrives. Why each rule exists and
how large mails travel: docs/design.md, "Attachments, inline images and headers".
"""

from __future__ import annotations

import binascii
import mimetypes
import re
from collections.abc import Sequence
from typing import Annotated, Any, Protocol

import pybase64
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Limits (README, "Attachments"): the number of files, their decoded total, a filename.
MAX_ATTACHMENTS = 20
MAX_ATTACHMENTS_BYTES = 10 * 1024 * 1024
MAX_FILENAME_LENGTH = 255  # the common file-system limit for one name
MAX_CONTENT_ID_LENGTH = 128
MAX_HEADERS = 30
MAX_HEADER_VALUE_LENGTH = 998  # RFC 5322 §2.1.1: a line's limit
MAX_TEMPLATE_VARIABLES_BYTES = 64 * 1024


def base64_length(decoded: int) -> int:
    """How many characters ``decoded`` bytes take in base64 (with padding)."""
    return (decoded + 2) // 3 * 4


# --- attachments -------------------------------------------------------------------


def _strict_base64(value: Any) -> Any:
    # pydantic's Base64Bytes skips characters outside the alphabet; a strict decode
    # refuses them, so a truncated or corrupted upload is a 422, not a damaged file.
    # pybase64 decodes with SIMD, as the standard library's b64decode(validate=True)
    # would, 30-60 times faster: it runs on the API's event loop.
    if isinstance(value, bytes):
        return value  # already decoded (a model built in code)
    if not isinstance(value, str):
        raise PydanticCustomError("base64_type", "must be a base64 string")
    try:
        decoded = pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError(
            "base64_decode", "is not valid base64 (RFC 4648, with padding, no line breaks)"
        ) from None
    if not decoded:
        raise PydanticCustomError("empty_file", "the file is empty")
    return decoded


def _b64encode(value: bytes) -> str:
    return pybase64.b64encode(value).decode("ascii")


# Decoded bytes in the model, base64 in JSON (the request and the task message alike).
Base64Content = Annotated[
    bytes,
    BeforeValidator(_strict_base64),
    PlainSerializer(_b64encode, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "minLength": 4}),
]

# C0, DEL, C1 and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _plain_filename(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError("filename_control", "must not contain control characters")
    if "/" in value or "\\" in value:
        raise PydanticCustomError("filename_path", "must be a file name, not a path")
    if value.strip(" .") == "":
        raise PydanticCustomError("filename_empty", "must name a file")
    return value


Filename = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_FILENAME_LENGTH),
    AfterValidator(_plain_filename),
]

# RFC 2045 §5.1: type "/" subtype, each a token; no parameters.
_MIME_WORD = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_MIME_WORD})/({_MIME_WORD})")
# A message/* or multipart/* part holds MIME structure of its own; sent as a file it
# would be re-parsed as part of the mail (RFC 2046 §5.2 forbids base64 for message/*).
_NOT_A_FILE = ("multipart", "message")
FALLBACK_CONTENT_TYPE = "application/octet-stream"


def _media_type(value: str) -> str:
    match = _MEDIA_TYPE.fullmatch(value)
    if match is None:
        raise PydanticCustomError(
            "content_type", "must be a media type such as application/pdf, without parameters"
        )
    if match.group(1).lower() in _NOT_A_FILE:
        raise PydanticCustomError(
            "content_type_structure",
            "multipart/* and message/* cannot be attached as files; use application/octet-stream",
        )
    return value.lower()


MediaType = Annotated[str, StringConstraints(max_length=255), AfterValidator(_media_type)]

# RFC 2392 content ids are msg-ids without the angle brackets: dot-atom characters, @.
ContentId = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=MAX_CONTENT_ID_LENGTH,
        pattern=r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+$",
    ),
]


def guess_content_type(filename: str) -> str:
    """The media type the file's extension names, else application/octet-stream."""
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    # "x.tar.gz" guesses application/x-tar with an encoding: the bytes are gzip, not tar.
    if guessed is None or encoding is not None or guessed.split("/")[0] in _NOT_A_FILE:
        return FALLBACK_CONTENT_TYPE
    return guessed


class Attachment(BaseModel):
    """A file sent with the mail; with a ``content_id``, an image the HTML shows inline."""

    model_config = ConfigDict(extra="forbid")

    filename: Filename = Field(
        description=f"The file's name, at most {MAX_FILENAME_LENGTH} characters, no path "
        "and no control characters. Non-ASCII names are sent per RFC 2231."
    )
    content: Base64Content = Field(description="The file's bytes, base64 (RFC 4648).")
    content_type: MediaType | None = Field(
        default=None,
        description="e.g. application/pdf; guessed from the filename's extension when "
        "absent (application/octet-stream when unknown).",
    )
    content_id: ContentId | None = Field(
        default=None,
        description="Makes the file inline: the HTML shows it as cid:<content_id>, and an "
        "id the HTML does not use is refused.",
    )

    @model_validator(mode="after")
    def _guess_type(self) -> Attachment:
        # Guessed here, at the API, and carried in the task message: the worker's
        # mimetypes tables (read from the host's /etc/mime.types) may differ.
        if self.content_type is None:
            self.content_type = guess_content_type(self.filename)
        return self

    def media_type(self) -> tuple[str, str]:
        """(maintype, subtype)."""
        maintype, _, subtype = (self.content_type or FALLBACK_CONTENT_TYPE).partition("/")
        return maintype, subtype


def _attachments_within_limits(value: list[Attachment]) -> list[Attachment]:
    total = sum(len(attachment.content) for attachment in value)
    if total > MAX_ATTACHMENTS_BYTES:
        raise PydanticCustomError(
            "attachments_too_large",
            "the attachments total {total} bytes decoded; at most {limit}",
            {"total": total, "limit": MAX_ATTACHMENTS_BYTES},
        )
    return value


Attachments = Annotated[
    list[Attachment],
    Field(max_length=MAX_ATTACHMENTS),
    AfterValidator(_attachments_within_limits),
]


class _MaybeInline(Protocol):
    @property
    def content_id(self) -> str | None: ...


def unused_content_ids(
    attachments: Sequence[_MaybeInline], html: str | None
) -> list[tuple[int, str]]:
    """(index, why) for each inline attachment the HTML does not show, or shows twice
    over (two parts with one id would make ``cid:`` ambiguous). Attachments inline in
    the request, or stored beside a queued message (shared_schemas.stored_content)."""
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, attachment in enumerate(attachments):
        cid = attachment.content_id
        if cid is None:
            continue
        if cid.lower() in seen:
            problems.append((index, f"content_id {cid!r} is used by an earlier attachment"))
        elif html is None:
            problems.append((index, f"content_id {cid!r} needs an html part that shows it"))
        elif not _shows(html, cid):
            problems.append((index, f"the html never refers to cid:{cid}"))
        seen.add(cid.lower())
    return problems


def _shows(html: str, cid: str) -> bool:
    # "cid:logo" must not count for "cid:logo2": the id ends where its characters do.
    return (
        re.search(rf"cid:{re.escape(cid)}(?![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.@-])", html) is not None
    )


# --- custom headers ----------------------------------------------------------------

# Besides X-*: the list and threading headers a transactional sender sets itself.
ALLOWED_HEADERS = frozenset(
    {"list-unsubscribe", "list-unsubscribe-post", "in-reply-to", "references"}
)
# What the service writes itself (worker_service.message): never taken from a caller.
SERVICE_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version"}
)
# RFC 5322 §3.6.8: field-name = 1*ftext; ftext = %d33-57 / %d59-126 (printable, no colon).
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def _header_name(name: str) -> str:
    if not _FIELD_NAME.fullmatch(name):
        raise PydanticCustomError(
            "header_name", "is not a header name (RFC 5322: printable ASCII, no colon or space)"
        )
    lowered = name.lower()
    if lowered in SERVICE_HEADERS or lowered.startswith("content-"):
        raise PydanticCustomError(
            "header_reserved", "{name} is written by the service and cannot be set", {"name": name}
        )
    if not lowered.startswith("x-") and lowered not in ALLOWED_HEADERS:
        raise PydanticCustomError(
            "header_not_allowed",
            "only X-* headers, List-Unsubscribe, List-Unsubscribe-Post, In-Reply-To and "
            "References can be set",
        )
    return name


def _header_value(value: str) -> str:
    # CR, LF and NUL would end the header and start another; the other controls have no
    # place in a header either (a tab is folding white space and stays allowed).
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029\x85]", value):
        raise PydanticCustomError(
            "header_value", "must be one line: CR, LF, NUL and other control characters are refused"
        )
    if value.strip() == "":
        raise PydanticCustomError("header_value_empty", "must not be empty")
    return value


HeaderName = Annotated[str, StringConstraints(max_length=76), AfterValidator(_header_name)]
HeaderValue = Annotated[
    str, StringConstraints(max_length=MAX_HEADER_VALUE_LENGTH), AfterValidator(_header_value)
]


def _one_of_each(value: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name in value:
        if name.lower() in seen:
            raise PydanticCustomError(
                "header_duplicate",
                "{name} is given twice (header names ignore case)",
                {"name": name},
            )
        seen.add(name.lower())
    return value


Headers = Annotated[
    dict[HeaderName, HeaderValue], Field(max_length=MAX_HEADERS), AfterValidator(_one_of_each)
]


# --- templates ---------------------------------------------------------------------

TemplateName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


def _small_variables(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    # A bound on the work one submission can ask of the renderer.
    size = len(repr(value))
    if size > MAX_TEMPLATE_VARIABLES_BYTES:
        raise PydanticCustomError(
            "variables_too_large",
            "the variables take {size} characters; at most {limit}",
            {"size": size, "limit": MAX_TEMPLATE_VARIABLES_BYTES},
        )
    return value


class TemplateRef(BaseModel):
    """A stored template (PUT /templates/{name}) in place of subject, body and html."""

    model_config = ConfigDict(extra="forbid")

    name: TemplateName
    variables: Annotated[dict[str, JsonValue], AfterValidator(_small_variables)] = Field(
        default_factory=dict, description="The values the template's {{ names }} refer to."
    )


class TemplateUsed(BaseModel):
    """Which template, in which version, a mail was rendered from (in its status)."""

    name: str
    version: int
