"""/docs and /redoc render in a real browser with no network but the API's own.

Swagger UI and Redoc come from the fastapi-offline package, served by the API: a
headless Chromium that can resolve no host but 127.0.0.1 must still draw every
operation. Skipped where there is no Chromium (CI installs Debian's: .ci/run).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import QuietApi

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _rendered(url: str, profile: Path) -> str:
    """The page's DOM once its scripts ran (Chromium's virtual time: no sleeping)."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        # Air-gapped: any host but the API's fails to resolve, CDNs included.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_swagger_ui_renders_every_operation(quiet_api: QuietApi, tmp_path: Path) -> None:
    dom = _rendered(f"{quiet_api.base_url}/docs", tmp_path)
    assert "SwaggerUIBundle is not defined" not in dom
    for path in ("/send-email", "/task-status/{task_id}", "/readyz"):
        assert f'data-path="{path}"' in dom, f"{path} not drawn by Swagger UI"


def test_redoc_renders_every_operation(quiet_api: QuietApi, tmp_path: Path) -> None:
    dom = _rendered(f"{quiet_api.base_url}/redoc", tmp_path)
    assert "redoc-wrap" in dom, "Redoc did not start"
    for text in ("Queue an email for delivery", "/send-email", "/task-status/{task_id}"):
        assert text in dom
