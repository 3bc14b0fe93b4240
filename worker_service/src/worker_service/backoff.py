"""How long to wait before retry number n."""

from __future__ import annotations

import random


def retry_delay(retries: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random.

    The fixed half keeps retries spaced out; the random half keeps many mails that
    failed together (an SMTP server restarting) from retrying in lockstep.
    """
    step = min(cap, base * 2.0**retries)
    return step / 2 + random.uniform(0, step / 2)
