"""Logging: JSON lines (or plain text) for the API and uvicorn's own loggers.

uvicorn configures logging before it imports the app, so this re-points the handlers
it made (and the root logger) at one formatter.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

_FIELDS = "{asctime}{levelname}{name}{message}"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            _FIELDS,
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def configure(log_format: str, level: str, access_log: bool) -> None:
    chosen = formatter(log_format)
    logging.getLogger("uvicorn.access").disabled = not access_log
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    root.setLevel(level)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(chosen)
