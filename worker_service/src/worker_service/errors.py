"""Failures a task reports. Their single string argument is what the status API shows."""

from __future__ import annotations


class InvalidPayload(Exception):
    """The message's arguments do not match the task's shared payload model."""


class PermanentDeliveryError(Exception):
    """The SMTP server refused the mail for good (a 5xx reply)."""


class RelayMisconfigured(PermanentDeliveryError):
    """The relay and the worker's SMTP settings do not fit: a certificate that does not
    verify, TLS where the port speaks plain SMTP (or the reverse), AUTH not offered,
    credentials refused. Every mail would fail the same way, so it fails at once."""


class TransientDeliveryError(Exception):
    """The mail could not be handed over this time (4xx, connection or timeout)."""


class AttemptsLost(Exception):
    """The task's attempts kept ending with their worker (killed, out of memory)."""


class ContentMissing(Exception):
    """The mail's attachments, stored beside its message, are gone (their key expired
    or was deleted) or are not the ones the message names. It is never sent without
    them: the task fails for good."""
