"""The compose file's own api and worker commands and environment work: run them as
local processes (no Docker engine here) against a password-protected Redis and the test
SMTP server, and send a mail through them.

Only addresses are rewritten: the compose service names (redis, mailpit) become
127.0.0.1 with this test's ports, and the API listens on 127.0.0.1 and a free port
instead of 0.0.0.0:8000.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.procs import BIN, Proc, RedisServer, free_port, start_worker, wait_for
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (and $$ for a literal $)."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator and operator.endswith("-"):
            return argument
        if operator and operator.endswith("?"):
            raise AssertionError(f"compose would refuse to start: {argument}")
        return ""

    return _VARIABLE.sub(one, text).replace("$$", "$")


def service(name: str) -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"][name]
    return found


@pytest.fixture(scope="module")
def secured_redis(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir, password=secrets.token_urlsafe(16))
    yield server
    server.stop()


def local_environment(
    name: str, values: dict[str, str], redis_server: RedisServer, smtp: SmtpSink
) -> dict[str, str]:
    env = {k: interpolate(str(v), values) for k, v in service(name)["environment"].items()}
    for key, value in env.items():
        env[key] = value.replace("@redis:6379/", f"@127.0.0.1:{redis_server.port}/")
    if "SMTP_HOST" in env:
        assert env["SMTP_HOST"] == "mailpit"
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp.port))
    return env


def test_compose_commands_deliver_a_mail_with_a_redis_password(
    secured_redis: RedisServer, smtp: SmtpSink, log_dir: Path
) -> None:
    assert secured_redis.password is not None
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=secured_redis.port).ping()

    values = {"REDIS_PASSWORD": secured_redis.password, "API_KEYS": "compose-key"}
    api_env = local_environment("api", values, secured_redis, smtp)
    worker_env = local_environment("worker", values, secured_redis, smtp)
    assert secured_redis.password in api_env["CELERY_BROKER_URL"]

    api_command = [str(part) for part in service("api")["command"]]
    port = free_port()
    api_command[api_command.index("--host") + 1] = "127.0.0.1"
    api_command[api_command.index("--port") + 1] = str(port)
    api_command[0] = str(BIN / api_command[0])
    worker_command = [str(part) for part in service("worker")["command"]]
    assert worker_command[:4] == ["celery", "-A", "worker_service", "worker"]

    worker = start_worker("compose-worker", worker_env, log_dir, command=worker_command)
    api = Proc("compose-api", api_command, api_env, log_dir)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(base), timeout=30, what="the compose API")
        subject = f"compose {uuid.uuid4().hex[:8]}"
        headers = {"Authorization": "Bearer compose-key"}
        with httpx.Client(base_url=base, headers=headers, timeout=15) as client:
            assert client.get("/readyz").status_code == 200
            response = client.post(
                "/send-email", json={"to": "ops@example.com", "subject": subject, "body": "hi"}
            )
            assert response.status_code == 202, response.text
            task_id = response.json()["task_id"]
            wait_for(
                lambda: client.get(f"/task-status/{task_id}").json()["status"] == "SUCCESS",
                timeout=30,
                what="SUCCESS through the compose commands",
            )
        [mail] = smtp.wait_for_messages(1, Subject=subject)
        assert mail.message["From"] == worker_env["MAIL_FROM"]
        # The password never shows in what the processes print.
        assert secured_redis.password not in api.log() + worker.log()
    finally:
        api.stop()
        worker.stop()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
