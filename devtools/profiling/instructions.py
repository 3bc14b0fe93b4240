"""``python -m devtools.profiling.instructions``: instructions per request and per mail,
under callgrind.

A shared machine's speed drifts by 20-100 % between minutes, so timed A/B runs of a
small change say little. valgrind's callgrind counts the instructions a process runs:
the same for the same code and input whatever else the machine is doing. It drives the
same mail as ``make bench`` (bench.run.MAIL). Two measurements:

- ``api``: the API app driven in-process through its ASGI interface (64 concurrent
  requests, real Redis, no HTTP server), counting ``POST /send-email`` and then
  ``GET /task-status/{id}`` after a warm-up of each. The counters are zeroed and dumped
  around each phase by valgrind's client requests, from a helper compiled here.
- ``worker``: a real worker node (``celery -A worker_service worker --concurrency 1``)
  under callgrind, both processes, sending real mails to the minimal SMTP sink; the
  counters are zeroed and dumped with ``callgrind_control`` around the measured mails.

``--pythonpath`` puts another copy of a service's package first (the code to compare).
Needs valgrind and, for ``api``, a C compiler with valgrind's headers.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from bench.procs import start_redis
from bench.run import API_KEY, MAIL, PublishOnly
from bench.smtp_sink import SmtpSink
from devtools.procs import BIN, ROOT, wait_for
from shared_schemas.tasks import SEND_EMAIL, task_routes

_CLIENT_REQUESTS = r"""
#include <valgrind/callgrind.h>
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""
_CONCURRENCY = 64


def _summary(path: Path) -> int:
    return int(re.findall(r"^summary: (\d+)", path.read_text(), re.M)[-1])


def _dumps(work: Path) -> dict[str, list[Path]]:
    """Each process's dumps (cg.<pid>.<n>), in order."""
    found: dict[str, list[Path]] = {}
    for path in work.glob("cg.*.*"):
        found.setdefault(path.name.split(".")[1], []).append(path)
    return {
        p: sorted(paths, key=lambda q: int(q.name.rsplit(".", 1)[1])) for p, paths in found.items()
    }


# -- api ----------------------------------------------------------------------------------


def _api_driver(requests: int) -> None:
    """Runs under valgrind: the app in-process, each phase zeroed and dumped."""
    from api_service.main import app

    cg = ctypes.CDLL(os.environ["BENCH_CG_HELPER"])
    body = json.dumps(MAIL).encode()

    async def call(method: str, path: str, payload: bytes = b"") -> dict[str, Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"authorization", f"Bearer {API_KEY}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        answer: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await app(scope, receive, send)
        return answer

    async def phase(
        count: int, make: Callable[[int], Awaitable[dict[str, Any]]], status: int
    ) -> list[dict[str, Any]]:
        numbers = iter(range(count))
        answers: list[dict[str, Any]] = []

        async def connection() -> None:
            for n in numbers:
                answers.append(await make(n))

        await asyncio.gather(*(connection() for _ in range(_CONCURRENCY)))
        bad = [a for a in answers if a.get("status") != status]
        if bad:
            raise SystemExit(f"{len(bad)} answers were not {status}: {bad[0]}")
        return answers

    async def main() -> None:
        async with app.router.lifespan_context(app):
            submit = lambda n: call("POST", "/send-email", body)  # noqa: E731
            await phase(300, submit, 202)
            cg.cg_zero()
            accepted = await phase(requests, submit, 202)
            cg.cg_dump(b"enqueue")
            ids = [json.loads(a["body"])["task_id"] for a in accepted[:300]]
            read = lambda n: call("GET", f"/task-status/{ids[n % len(ids)]}")  # noqa: E731
            await phase(300, read, 200)
            cg.cg_zero()
            await phase(requests, read, 200)
            cg.cg_dump(b"status")

    import uvloop

    uvloop.run(main())


def measure_api(requests: int, pythonpath: str | None, work: Path) -> dict[str, float]:
    helper = work / "cg.so"
    source = work / "cg.c"
    source.write_text(_CLIENT_REQUESTS)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", helper, source], check=True)
    redis_proc, port = start_redis(work)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        env = {
            **os.environ,
            "BENCH_CG_HELPER": str(helper),
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": url,
            "API_KEYS": API_KEY,
            "RATE_LIMIT_PER_MINUTE": "0",
            # Under callgrind the API runs tens of times slower: its own slowness, not
            # Redis's, would otherwise pass the 2 s default and answer 503.
            "REDIS_TIMEOUT": "120",
            "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, str(ROOT)])),
        }
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.%p"]
        command += [str(BIN / "python"), "-m", "devtools.profiling.instructions", "_api-driver"]
        command += [str(requests)]
        run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise SystemExit(f"the API driver failed:\n{run.stderr[-3000:]}")
    finally:
        redis_proc.stop()
    ((_, dumps),) = _dumps(work).items()
    enqueue, status = (_summary(path) for path in dumps[:2])
    return {"enqueue": enqueue / requests, "status": status / requests}


# -- worker -------------------------------------------------------------------------------


def measure_worker(mails: int, pythonpath: str | None, work: Path) -> dict[str, float]:
    redis_proc, port = start_redis(work)
    sink = SmtpSink("minimal")
    worker: subprocess.Popen[bytes] | None = None
    try:
        url = f"redis://127.0.0.1:{port}/0"
        env = {
            **os.environ,
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(sink.port),
            "SMTP_SECURITY": "none",
            "MAIL_FROM": "Bench <bench@example.org>",
            "WORKER_METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
        }
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        log = work / "worker.log"
        command = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
        command += [f"--callgrind-out-file={work}/cg.%p", str(BIN / "celery")]
        command += ["-A", "worker_service", "worker", "--loglevel", "INFO", "--concurrency", "1"]
        command += ["--without-mingle", "--without-gossip", "--hostname", "instructions@%h"]
        with log.open("wb") as out:
            worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(
            lambda: " ready." in log.read_text(), timeout=300, what="the worker under valgrind"
        )
        publisher = PublishOnly("instructions", broker=url, set_as_current=False)
        publisher.conf.update(
            task_serializer="json", accept_content=["json"], task_routes=task_routes()
        )

        def send(count: int, first: int) -> None:
            for n in range(first, first + count):
                email = {**MAIL, "to": [f"user{n}@example{n % 20}.com"]}
                publisher.send_task(SEND_EMAIL, kwargs={"email": email}, task_id=str(uuid.uuid4()))

        def delivered(count: int) -> None:
            wait_for(lambda: sink.count >= count, timeout=1200, what=f"{count} mails")
            time.sleep(1)  # the last mail's ack and bookkeeping

        send(60, 0)
        delivered(60)
        subprocess.run(["callgrind_control", "-z"], capture_output=True, check=True)
        send(mails, 60)
        delivered(60 + mails)
        before = sum(len(paths) for paths in _dumps(work).values())
        subprocess.run(["callgrind_control", "-d"], capture_output=True, check=True)
        # One more dump from each of the node's two processes.
        wait_for(
            lambda: sum(len(paths) for paths in _dumps(work).values()) >= before + 2,
            timeout=60,
            what="the dumps",
        )
        time.sleep(1)  # a dump is written before it is complete
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(120)
        sink.stop()
        redis_proc.stop()
    per_process = {pid: _summary(paths[-1]) / mails for pid, paths in _dumps(work).items()}
    main_pid = min(per_process, key=int)  # the node's main process starts first
    child = sum(v for pid, v in per_process.items() if pid != main_pid)
    return {"main": per_process[main_pid], "pool": child, "mail": per_process[main_pid] + child}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.profiling.instructions")
    parser.add_argument("what", choices=["api", "worker", "_api-driver"])
    parser.add_argument("count", nargs="?", type=int, default=None)
    parser.add_argument("--pythonpath", help="a copy of a service's package to measure")
    args = parser.parse_args(argv)
    if args.what == "_api-driver":
        _api_driver(args.count)
        return 0
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        work = Path(tmp)
        if args.what == "api":
            result = measure_api(args.count or 1000, args.pythonpath, work)
            unit = "per request"
        else:
            result = measure_worker(args.count or 200, args.pythonpath, work)
            unit = "per mail"
    for name, value in result.items():
        print(f"{name}: {value / 1000:,.0f}k instructions {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
