"""A batch's task messages copied from the first one Celery builds.

``send_task`` costs ~100 µs of CPU per message (routing, options, kombu's publish
path): for a batch of 500, more than everything else the batch costs together, and for
the submissions the dispatcher writes together, 29 % of each one's instructions
(docs/design.md, "Shortcuts kept, and what each saves"). The messages of one batch
differ only in the task id (``id``, ``root_id``,
``correlation_id``), kombu's ``delivery_tag`` and the body, so Celery builds the first
message of each batch (api_service.publisher) and the others are that message with
those fields replaced, the body encoded as kombu encodes it (JSON, then base64).
``copies`` checks the first message has that shape, and answers None when it does not
(another Celery or kombu, an option that adds a command), so the caller builds each
message with Celery. tests/test_batch_messages.py holds a copy to the very bytes
``send_task`` writes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from api_service.broker_transport import BrokerCommand
from api_service.submissions import Submission

# Stand-ins for the fields a copy replaces, in the first message's JSON: plain ASCII,
# so JSON writes them as they are, and none of them can occur in a message otherwise.
_ID, _TAG, _BODY = "@@copy-task-id@@", "@@copy-delivery-tag@@", "@@copy-body@@"
# Each stand-in -> its value's place in (task id, delivery tag, body).
_FIELDS = {_ID: 0, _TAG: 1, _BODY: 2}
_STAND_INS = re.compile(f"({re.escape(_ID)}|{re.escape(_TAG)}|{re.escape(_BODY)})")

# json.dumps with its defaults: the same encoder, without its keyword handling per call.
_dumps = json.JSONEncoder().encode
# A random hex digit -> the same digit with its top two bits 10: a UUID's variant nibble.
_VARIANT = {f"{n:x}": f"{n & 3 | 8:x}" for n in range(16)}


def copies(
    first: Submission, commands: list[BrokerCommand], others: Sequence[Submission]
) -> list[list[BrokerCommand]] | None:
    """The commands that queue each of ``others``, copied from ``commands`` (the first
    submission's, as Celery built them); None if they are not one message to copy."""
    template = _template(first, commands)
    if template is None:
        return None
    name, queue, message, args, embed = template
    if any(submission.task_name != first.task_name for submission in others):
        return None
    # The message as kombu writes it (json.dumps, its default separators), cut at the
    # stand-ins: the pieces between them stay, each stand-in's piece takes its value.
    # (str.format would parse all ~1 kB of it again for each copy: ~6 times the cost.)
    message["headers"].update(id=_ID, root_id=_ID)
    message["properties"].update(correlation_id=_ID, delivery_tag=_TAG)
    message["body"] = _BODY
    pieces = _STAND_INS.split(json.dumps(message))
    slots = [(index, _FIELDS[pieces[index]]) for index in range(1, len(pieces), 2)]
    # The body as kombu serialises [args, kwargs, embed]: the list's items joined by ", ".
    before, after = f"[{json.dumps(args)}, ", f", {json.dumps(embed)}]"
    copied: list[list[BrokerCommand]] = []
    for submission, tag in zip(others, _uuid4s(len(others)), strict=True):
        body = f"{before}{_dumps(submission.kwargs)}{after}".encode()
        values = (submission.task_id, tag, binascii.b2a_base64(body, newline=False).decode())
        parts = pieces.copy()
        for index, field in slots:
            parts[index] = values[field]
        copied.append([(name, (queue, "".join(parts)))])
    return copied


def _uuid4s(count: int) -> Iterator[str]:
    """``count`` delivery tags as ``str(uuid.uuid4())`` writes them: 128 random bits
    but the version (4) and the variant's two, from one os.urandom call for them all."""
    digits = os.urandom(16 * count).hex()
    variant = _VARIANT
    for start in range(0, 32 * count, 32):
        h = digits[start : start + 32]
        yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}"


def _template(
    first: Submission, commands: list[BrokerCommand]
) -> tuple[str, str, dict[str, Any], Any, Any] | None:
    if len(commands) != 1:
        return None
    ((name, command_args),) = commands
    if name.lower() != "lpush" or len(command_args) != 2:
        return None
    queue, raw = command_args
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    headers = message.get("headers", {})
    properties = message.get("properties", {})
    ids = (headers.get("id"), headers.get("root_id"), properties.get("correlation_id"))
    if ids != (first.task_id,) * 3 or properties.get("body_encoding") != "base64":
        return None
    if message.get("content-type") != "application/json":
        return None
    body = json.loads(base64.b64decode(message["body"]))
    if not (isinstance(body, list) and len(body) == 3 and body[1] == first.kwargs):
        return None
    args, _, embed = body
    return name, str(queue), message, args, embed
