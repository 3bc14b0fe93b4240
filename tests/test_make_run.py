"""`make run` (devtools.run_stack): a newcomer's first minute works, and Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx

from tests.procs import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_run_stack_prints_a_key_delivers_a_mail_and_stops_on_ctrl_c() -> None:
    ports = {
        "DEV_API_PORT": free_port(),
        "DEV_REDIS_PORT": free_port(),
        "DEV_SMTP_PORT": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if k != "API_KEYS"}
    env.update({name: str(port) for name, port in ports.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.run_stack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("API key" in line for line in lines), what="the banner")
        match = re.search(r"API key\s+(\S+)\s+\(generated", "".join(lines))
        assert match, "".join(lines)
        key = match.group(1)
        assert any("curl -si -X POST" in line and key in line for line in lines)
        wait_for(lambda: _listening(ports["DEV_API_PORT"]), timeout=30, what="the API")
        wait_for(lambda: any(" ready." in line for line in lines), timeout=60, what="the worker")

        subject = f"first minute {uuid.uuid4().hex[:8]}"
        base = f"http://127.0.0.1:{ports['DEV_API_PORT']}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            response = client.post(
                "/send-email", json={"to": "new@example.com", "subject": subject, "body": "hi"}
            )
            assert response.status_code == 202, response.text
            status_url = response.headers["Location"]
            wait_for(
                lambda: client.get(status_url).json()["status"] == "SUCCESS",
                timeout=30,
                what="SUCCESS",
            )
        # The SMTP catcher shows the mail it received.
        wait_for(lambda: any(subject in line for line in lines), what="the catcher to print it")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=5)
    for name, port in ports.items():
        assert not _listening(port), f"{name} still listening after Ctrl-C"
