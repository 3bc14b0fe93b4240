"""Fault injection for the crash tests: stop the worker at one named point of its code.

``WORKER_FAULT_INJECTION=<point>:kill`` SIGKILLs the whole worker the first time it
reaches ``<point>``; ``<point>:pause:<file>`` creates ``<file>`` there and waits until a
test removes it (to restart Redis at that very moment, say). Unset, as in every
deployment, ``reached`` is one comparison. The points:

- ``woken``: an idle worker's wait was ended by a doorbell, before the queues are
  looked at;
- ``fetched``: a message has been taken and recorded as unacked, before Celery has it;
- ``before_start``: Celery runs the task, before its attempt begins (a cancel then
  still wins);
- ``accepted``: the SMTP server has answered 250 to the mail's data, before the
  delivery ledger is written.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_point, _, _action = os.environ.get("WORKER_FAULT_INJECTION", "").partition(":")


def reached(point: str) -> None:
    if point != _point:
        return
    if _action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif _action.startswith("pause:"):
        flag = Path(_action.removeprefix("pause:"))
        flag.touch()
        while flag.exists():
            time.sleep(0.05)
