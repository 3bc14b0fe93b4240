"""``make run``: the whole stack in the foreground, stopped together by Ctrl-C.

Starts redis-server, an SMTP catcher that prints every mail it receives, the API on
127.0.0.1:8000 and one worker, all as local processes under honcho.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Printer

from devtools.redis_binary import find_redis_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _banner(api_url: str, api_key: str, generated: bool) -> str:
    origin = "generated for this run" if generated else "from API_KEYS"
    auth = f"Authorization: Bearer {api_key}"
    mail = '{"to": "alice@example.com", "subject": "Hello", "body": "It works."}'
    return f"""
  Email dispatch dev stack
  API      {api_url}   (docs: {api_url}/docs)
  API key  {api_key}   ({origin})

  Send a mail (the SMTP catcher below prints it):
    curl -si -X POST {api_url}/send-email -H '{auth}' \\
         -H 'Content-Type: application/json' -d '{mail}'

  Then follow it, with the task_id from that answer:
    curl -s {api_url}/task-status/<task_id> -H '{auth}'

  Ctrl-C stops everything.
"""


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

    print(_banner(f"http://127.0.0.1:{api_port}", first_key, generated), flush=True)
    manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty()))
    child_env = {**os.environ, **env}
    for name, cmd in (
        ("redis", redis_cmd),
        ("smtp", smtp_cmd),
        ("api", api_cmd),
        ("worker", worker_cmd),
    ):
        manager.add_process(name, shlex.join(cmd), env=child_env, cwd=str(ROOT))
    manager.loop()
    return int(manager.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
