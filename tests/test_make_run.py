"""`make run` (devtools.run_stack): a newcomer's first minute works, and Ctrl-C stops it all.

Real processes: the stack's own redis-server, SMTP catcher, API and worker, started the way
a person starts them (``make run`` in a terminal, a pty here) and stopped the ways a person
stops them: Ctrl-C, a pipeline killed, the parent SIGKILLed.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.procs import free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BANNER_END = "Ctrl-C stops everything."


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stack_env() -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a `make run` on free ports, outside any enclosing make."""
    ports = {
        "DEV_API_PORT": free_port(),
        "DEV_REDIS_PORT": free_port(),
        "DEV_SMTP_PORT": free_port(),
        "WORKER_METRICS_PORT": free_port(),
    }
    drop = {"API_KEYS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({name: str(port) for name, port in ports.items()})
    return env, ports


def _listening_on(port: int) -> set[str]:
    """The addresses with a TCP socket listening on ``port`` (from /proc/net/tcp, tcp6)."""
    found: set[str] = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, words))
    return found


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from the state on: state, ppid, ...


def _descendants(root: int) -> set[tuple[int, str]]:
    """Every process below ``root``, as (pid, start time): pids can be reused."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[tuple[int, str]] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            fields = _stat(pid)
            if fields is not None and (pid, fields[19]) not in found:
                found.add((pid, fields[19]))
                todo.append(pid)
    return found


def _alive(processes: set[tuple[int, str]]) -> list[int]:
    left = []
    for pid, started in processes:
        fields = _stat(pid)
        if fields is not None and fields[19] == started and fields[0] != "Z":
            left.append(pid)
    return left


def _assert_all_gone(processes: set[tuple[int, str]], ports: dict[str, int]) -> None:
    wait_for(lambda: not _alive(processes), timeout=30, what=f"{_alive(processes)} to exit")

    # The kernel closes a dead process's listening socket a moment after the process is
    # gone (seen: /proc/net/tcp listing it, held by no process, for under 2 s).
    def still_listening() -> list[str]:
        return [name for name, port in ports.items() if _listening(port)]

    wait_for(lambda: not still_listening(), timeout=10, what=f"{still_listening()} to close")


def test_run_stack_prints_a_key_delivers_a_mail_and_stops_on_ctrl_c() -> None:
    env, ports = _stack_env()
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
    children: set[tuple[int, str]] = set()
    try:
        wait_for(lambda: any(BANNER_END in line for line in lines), timeout=90, what="banner")
        children = _descendants(proc.pid)
        # The banner comes once everything is ready, last: nothing scrolls it away.
        assert _listening(ports["DEV_API_PORT"])
        # Everything listens on this host only, the worker's metrics too.
        for name in ("DEV_API_PORT", "DEV_REDIS_PORT", "DEV_SMTP_PORT", "WORKER_METRICS_PORT"):
            assert _listening_on(ports[name]) == {"127.0.0.1"}, name
        ready = next(i for i, line in enumerate(lines) if " ready." in line)
        banner = next(i for i, line in enumerate(lines) if "API key" in line)
        assert ready < banner, "".join(lines)
        time.sleep(1)
        assert lines[-1].strip() == BANNER_END, "".join(lines[banner:])
        assert sum("API key" in line for line in lines) == 1

        match = re.search(r"API key\s+(\S+)\s+\(generated", "".join(lines))
        assert match, "".join(lines)
        key = match.group(1)
        assert any("curl -si -X POST" in line and key in line for line in lines)

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
        returncode = proc.wait(timeout=40)
        reader.join(timeout=5)
    assert returncode == 0, "".join(lines[-30:])
    assert len(children) >= 4
    _assert_all_gone(children, ports)


def _read_pty(fd: int, output: bytearray, until: bytes | None, timeout: float) -> None:
    """Read the terminal into ``output`` until ``until`` shows up, or until it closes."""
    deadline = time.monotonic() + timeout
    while until is None or until not in output:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {until!r}:\n{output.decode(errors='replace')}"
        if select.select([fd], [], [], min(remaining, 0.5))[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: every process holding the terminal has gone
                return
            if not chunk:
                return
            output += chunk


def test_ctrl_c_in_a_terminal_ends_make_run_without_an_error() -> None:
    env, ports = _stack_env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: make in a terminal of its own, as a person runs it
        try:
            os.chdir(ROOT)
            os.execvpe("make", ["make", "--no-print-directory", "run"], env)  # noqa: S606
        finally:
            os._exit(127)
    output = bytearray()
    children: set[tuple[int, str]] = set()
    try:
        _read_pty(fd, output, BANNER_END.encode(), timeout=90)
        children = _descendants(pid)
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground group
        _read_pty(fd, output, None, timeout=40)
    finally:
        if not children:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    assert "SIGINT: stopping everything" in text, text
    # run_stack exited 0: make reports no error (GNU make itself then re-raises the
    # SIGINT on itself, as it always does on Ctrl-C, so its own status stays 130).
    assert "make: ***" not in text, text
    assert os.waitstatus_to_exitcode(status) in (0, -signal.SIGINT), text
    assert len(children) >= 5  # run_stack and its four
    _assert_all_gone(children, ports)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_killing_a_piped_make_run_leaves_nothing_running(sig: signal.Signals) -> None:
    env, ports = _stack_env()
    # `make run | cat` as one job in its own process group, like a shell runs it: Ctrl-C
    # reaches all of it (cat dies at once, so run_stack's output pipe breaks); SIGKILL
    # leaves run_stack no chance to clean up, which PR_SET_PDEATHSIG covers.
    job = subprocess.Popen(
        ["bash", "-c", "make --no-print-directory run | cat"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert job.stdout is not None
    output = bytearray()
    children: set[tuple[int, str]] = set()
    try:
        _read_pty(job.stdout.fileno(), output, BANNER_END.encode(), timeout=90)
        children = _descendants(job.pid)
        os.killpg(job.pid, sig)
    finally:
        if not children:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=40)
        job.stdout.close()
    assert len(children) >= 7, children  # bash, make, cat, run_stack and its four
    _assert_all_gone(children, ports)


def test_closing_the_reader_of_its_output_stops_everything() -> None:
    # `make run | head`: the reader goes away on its own, no signal reaches run_stack.
    env, ports = _stack_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.run_stack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    output = bytearray()
    children: set[tuple[int, str]] = set()
    try:
        _read_pty(proc.stdout.fileno(), output, BANNER_END.encode(), timeout=90)
        children = _descendants(proc.pid)
        proc.stdout.close()
        returncode = proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert returncode == 0
    assert len(children) >= 4
    _assert_all_gone(children, ports)
