"""Tags and metadata: the caller's own labels on a task, kept with its record.

They travel with the payload, are stored in the task's record (``records.TAGS``,
``records.METADATA``, as JSON) when it is submitted, and come back in its status, in
listings (a tag is also a listing filter) and in events. Small on purpose: each is
stored once per task, and each tag adds an index entry (docs/design.md, "Listing
tasks").
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

MAX_TAGS = 10
MAX_TAG_LENGTH = 64
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 256

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control(text: str) -> str:
    # A label is shown in logs, events and dashboards, where a line break or an escape
    # sequence could forge or hide a line.
    if _CONTROL.search(text):
        raise ValueError("control characters (line breaks, tabs, escapes) are not allowed")
    return text


Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TAG_LENGTH),
    AfterValidator(_no_control),
]
MetadataKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_LENGTH),
    AfterValidator(_no_control),
]
MetadataValue = Annotated[
    str, StringConstraints(max_length=MAX_METADATA_VALUE_LENGTH), AfterValidator(_no_control)
]


def _distinct(tags: list[str]) -> list[str]:
    if len(set(tags)) != len(tags):
        raise ValueError("each tag may appear once")
    return tags


Tags = Annotated[
    list[Tag],
    Field(
        max_length=MAX_TAGS,
        description=f"Up to {MAX_TAGS} distinct tags of 1-{MAX_TAG_LENGTH} characters "
        "(no control characters). GET /tasks?tag=... lists the tasks with a tag.",
        examples=[["receipt", "shop-eu"]],
    ),
    AfterValidator(_distinct),
]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=MAX_METADATA_KEYS,
        description=f"Up to {MAX_METADATA_KEYS} string keys of 1-{MAX_METADATA_KEY_LENGTH} "
        f"characters with string values of at most {MAX_METADATA_VALUE_LENGTH} "
        "(no control characters). Returned as given; not searchable.",
        examples=[{"order_id": "A-1042", "customer": "c_77"}],
    ),
]
