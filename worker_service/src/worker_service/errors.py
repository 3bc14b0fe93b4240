"""Failures a task reports. Their single string argument is what the status API shows."""

from __future__ import annotations


class InvalidPayload(Exception):
    """The message's arguments do not match the task's shared payload model."""


class PermanentDeliveryError(Exception):
    """The SMTP server refused the mail for good (a 5xx reply)."""


class TransientDeliveryError(Exception):
    """The mail could not be handed over this time (4xx, connection or timeout)."""


class AttemptsLost(Exception):
    """The task's attempts kept ending with their worker (killed, out of memory)."""
