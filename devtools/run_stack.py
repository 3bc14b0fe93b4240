"""``make run``: the whole stack in the foreground, stopped together by Ctrl-C.

Starts redis-server, an SMTP catcher that prints every mail it receives, the API on
127.0.0.1:8000 and one worker (its metrics on 127.0.0.1 too), each in its own session,
and prints their output line by line with honcho's prefixes. The banner with the API
key comes last, once the API answers ``/readyz`` and the worker is ready, so it does not
scroll away.

Whatever ends this process, its children end with it:

- Ctrl-C, SIGTERM and SIGHUP stop them (the worker and the API first, then Redis and the
  catcher; SIGKILL after a grace period or at a second Ctrl-C), then it exits 0, so make
  prints no ``Error 130``;
- so does losing the reader of its output (``make run | tee log`` and tee is gone);
- each child is started with ``PR_SET_PDEATHSIG``, so the kernel sends it SIGTERM if this
  process dies without stopping it (SIGKILL, a crash).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import http.client
import os
import queue
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from honcho.colour import get_colours
from honcho.printer import Message, Printer

from devtools.redis_binary import find_redis_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Seconds each group of processes gets to stop after SIGTERM before it is SIGKILLed. The
# worker's warm shutdown waits for running sends; a killed one loses nothing (its
# messages come back after the visibility timeout).
GRACE = 10.0
PR_SET_PDEATHSIG = 1
SYSTEM = "system"


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _banner(api_url: str, api_key: str, generated: bool) -> str:
    origin = "generated for this run" if generated else "from API_KEYS"
    auth = f"Authorization: Bearer {api_key}"
    mail = '{"to": "alice@example.com", "subject": "Hello", "body": "It works."}'
    return f"""
  Email dispatch dev stack: ready
  API      {api_url}   (docs: {api_url}/docs)
  API key  {api_key}   ({origin})

  Send a mail (the SMTP catcher below prints it):
    curl -si -X POST {api_url}/send-email -H '{auth}' \\
         -H 'Content-Type: application/json' -d '{mail}'

  Then follow it, with the task_id from that answer:
    curl -s {api_url}/task-status/<task_id> -H '{auth}'

  Ctrl-C stops everything.
"""


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when this process dies (Linux only)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: Ctrl-C and SIGTERM still stop the stack
        return lambda: None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _api_ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _how(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"rc={returncode}"


class Stack:
    def __init__(self, output: IO[str]) -> None:
        self.output = output
        self.printer = Printer(output, colour=output.isatty())
        self.printer.width = len(SYSTEM)
        self.colours = get_colours()
        self.procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self.lines: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.readers: list[threading.Thread] = []
        self.stop_reason: str | None = None
        self.force = False
        self.sigints = 0
        self.exit_code = 0
        self.output_lost = False

    # -- output ---------------------------------------------------------------------------

    def write(self, name: str, data: bytes | str) -> None:
        if self.output_lost:
            return
        colour = self.procs[name][1] if name in self.procs else None
        message = Message("line", data, datetime.datetime.now(), name, colour)
        try:
            self.printer.write(message)
        except (OSError, ValueError):
            self._lose_output()

    def write_raw(self, text: str) -> None:
        if self.output_lost:
            return
        try:
            self.output.write(text)
            self.output.flush()
        except (OSError, ValueError):
            self._lose_output()

    def _lose_output(self) -> None:
        """The reader of our output is gone: stop the stack, and write nothing more."""
        self.output_lost = True
        # Python's own flush at exit must not fail on the closed pipe either.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.output.fileno())
            os.close(devnull)
        self.request_stop("output closed")

    def _output_closed(self, poller: select.poll | None) -> bool:
        # A pipe whose reader has gone reports POLLERR even before we write to it.
        if poller is None:
            return False
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))

    # -- processes ------------------------------------------------------------------------

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session and process group: the terminal's Ctrl-C reaches only this
            # process, which stops the children in order; killpg reaches their children.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        self.procs[name] = (proc, next(self.colours))
        self.printer.width = max(self.printer.width, len(name))
        self.write(SYSTEM, f"{name} started (pid={proc.pid})")

    def pump(self) -> None:
        """One reader thread per child; started after every fork (preexec_fn and threads)."""
        for name, (proc, _) in self.procs.items():
            assert proc.stdout is not None
            stdout = proc.stdout

            def read(name: str = name, stdout: IO[bytes] = stdout) -> None:
                for line in iter(stdout.readline, b""):
                    self.lines.put((name, line))

            reader = threading.Thread(target=read, name=f"read-{name}", daemon=True)
            reader.start()
            self.readers.append(reader)

    def signal(self, names: list[str], sig: signal.Signals) -> None:
        for name in names:
            proc = self.procs[name][0]
            if proc.poll() is None:
                if sig == signal.SIGKILL:
                    self.write(SYSTEM, f"sending SIGKILL to {name} (pid {proc.pid})")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)

    def running(self, names: list[str]) -> list[str]:
        return [name for name in names if self.procs[name][0].poll() is None]

    def request_stop(self, reason: str) -> None:
        if reason == "SIGINT":
            self.sigints += 1
            if self.sigints > 1:
                self.force = True  # a second Ctrl-C: no more waiting
        if self.stop_reason is None:
            self.stop_reason = reason

    # -- the loop -------------------------------------------------------------------------

    def run(self, api_port: int, banner: str) -> int:
        api_ready = threading.Event()
        worker_ready = False
        banner_shown = False

        def poll_api() -> None:
            while self.stop_reason is None and not _api_ready(api_port):
                time.sleep(0.2)
            if self.stop_reason is None:
                api_ready.set()

        threading.Thread(target=poll_api, name="readyz", daemon=True).start()
        try:
            poller: select.poll | None = select.poll()
            assert poller is not None
            poller.register(self.output.fileno(), 0)
        except (AttributeError, OSError, ValueError):
            poller = None

        # Stopped in two steps: what talks to Redis first, then Redis and the catcher.
        steps = [["worker", "api"], ["smtp", "redis"]]
        step = -1
        deadline = 0.0
        while True:
            # Print what the children wrote (a bounded batch: a flood must not starve
            # the checks below), then look at their state.
            for batch in range(500):
                try:
                    name, line = self.lines.get(timeout=0.1 if batch == 0 else 0)
                except queue.Empty:
                    break
                self.write(name, line)
                if name == "worker" and b" ready." in line:
                    worker_ready = True
            if self._output_closed(poller):
                poller = None
                self._lose_output()
            if self.stop_reason is None:
                for name, (proc, _) in self.procs.items():
                    if proc.poll() is not None:
                        self.write(SYSTEM, f"{name} exited ({_how(proc.returncode)})")
                        self.exit_code = 1
                        self.request_stop(f"{name} exited")
                        break
            if self.stop_reason is None:
                if not banner_shown and worker_ready and api_ready.is_set():
                    self.write_raw(banner)
                    banner_shown = True
                continue
            if step == -1:
                self.write(SYSTEM, f"{self.stop_reason}: stopping everything")
            if self.force:
                self.force = False
                self.signal(list(self.procs), signal.SIGKILL)
            if step == -1 or not self.running(steps[step]):
                step += 1
                if step == len(steps):
                    break
                self.signal(steps[step], signal.SIGTERM)
                deadline = time.monotonic() + GRACE
            elif time.monotonic() > deadline:
                self.signal(steps[step], signal.SIGKILL)
                deadline = time.monotonic() + GRACE
        for reader in self.readers:
            reader.join(timeout=1)
        while not self.lines.empty():
            self.write(*self.lines.get())
        for name, (proc, _) in self.procs.items():
            self.write(SYSTEM, f"{name} stopped ({_how(proc.wait())})")
        return self.exit_code

    def kill_all(self) -> None:
        """The last resort on the way out: nothing outlives this process."""
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> int:
    api_port = _port("DEV_API_PORT", 8000)
    redis_port = _port("DEV_REDIS_PORT", 6379)
    smtp_port = _port("DEV_SMTP_PORT", 1025)
    data_dir = ROOT / "var" / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)

    api_keys = os.environ.get("API_KEYS", "").strip()
    generated = not api_keys
    if generated:
        api_keys = "dev-" + secrets.token_urlsafe(24)
    first_key = api_keys.split(",")[0].strip()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "API_KEYS": api_keys,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_SECURITY": "none",
        # Like everything else here, on this host only (containers keep 0.0.0.0).
        "WORKER_METRICS_ADDR": "127.0.0.1",
        "MAIL_FROM": os.environ.get("MAIL_FROM", "Dev Stack <no-reply@example.com>"),
        "PYTHONUNBUFFERED": "1",
        # Plain lines for a person at a terminal; deployments keep the JSON default.
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
    }
    redis_cmd = [
        find_redis_server(),
        "--port",
        str(redis_port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    smtp_cmd = [
        str(BIN / "python"),
        "-m",
        "aiosmtpd",
        "-n",
        "-l",
        f"127.0.0.1:{smtp_port}",
        "-c",
        "aiosmtpd.handlers.Debugging",
    ]
    api_cmd = [
        str(BIN / "uvicorn"),
        "api_service.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(api_port),
    ]
    worker_cmd = [
        str(BIN / "celery"),
        "-A",
        "worker_service",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--hostname",
        "worker1@%h",
    ]

    stack = Stack(sys.stdout)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: stack.request_stop(signal.Signals(signum).name))
    # A closed output is noticed as BrokenPipeError (and by poll), never a silent death.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    child_env = {**os.environ, **env}
    try:
        for name, cmd in (
            ("redis", redis_cmd),
            ("smtp", smtp_cmd),
            ("api", api_cmd),
            ("worker", worker_cmd),
        ):
            stack.start(name, cmd, child_env)
        stack.pump()
        return stack.run(api_port, _banner(f"http://127.0.0.1:{api_port}", first_key, generated))
    finally:
        stack.kill_all()


if __name__ == "__main__":
    sys.exit(main())
