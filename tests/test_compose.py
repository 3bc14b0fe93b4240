"""docker-compose.yml, checked without a Docker engine.

Validates the file against the Compose Specification schema, runs ``docker compose config``
when a Compose CLI is installed, and asserts the properties the stack relies on: Redis
durability, start order, scalable workers, graceful worker shutdown and the entry points.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = ROOT.parent / "shared" / "compose-spec.json"
DOCKERFILES = {
    "api": ROOT / "api_service" / "Dockerfile",
    "worker": ROOT / "worker_service" / "Dockerfile",
}

# The contract entry points: what `make run` starts, and what the images must start too.
API_ENTRY = ["uvicorn", "api_service.main:app"]
WORKER_ENTRY = ["celery", "-A", "worker_service", "worker"]

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}...; "$${VAR}" is a literal "$" for
# the container's shell, not something compose reads.
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
_ENV_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "docker-compose.yml must be a mapping"
    return loaded


def _service(name: str) -> dict[str, Any]:
    services = _compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    service = services.get(name)
    assert isinstance(service, dict), f"service {name!r} is missing"
    return service


def _command(name: str) -> list[str]:
    command = _service(name).get("command")
    assert isinstance(command, list), f"{name}: command must be given as a list"
    assert all(isinstance(part, str) for part in command), f"{name}: command parts are strings"
    return [str(part) for part in command]


def _depends_on(name: str) -> dict[str, Any]:
    depends_on = _service(name).get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must be a mapping with conditions"
    return depends_on


def _compose_cli() -> list[str] | None:
    """The Compose CLI to call: docker-compose, else the docker compose plugin, else None."""
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def _dockerfile_cmd(path: Path) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    cmds = [line.removeprefix("CMD").strip() for line in lines if line.startswith("CMD ")]
    assert len(cmds) == 1, f"{path}: expected exactly one CMD line"
    cmd = json.loads(cmds[0])
    assert isinstance(cmd, list), f"{path}: CMD must be in exec (JSON list) form"
    return [str(part) for part in cmd]


def test_compose_file_matches_the_compose_specification() -> None:
    if not SCHEMA_FILE.is_file():
        pytest.skip(f"Compose Specification schema not found at {SCHEMA_FILE}")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The file names draft-07 by an https URL jsonschema does not know; default to it.
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema).iter_errors(_compose()), key=lambda err: list(err.absolute_path)
    )
    problems = [
        f"{'/'.join(str(part) for part in err.absolute_path) or '<root>'}: {err.message}"
        for err in errors
    ]
    assert not problems, "docker-compose.yml breaks the Compose schema:\n" + "\n".join(problems)


SECRETS = {"REDIS_PASSWORD": "s3cret", "API_KEYS": "k1,k2", "FLOWER_BASIC_AUTH": "admin:pw"}


def _compose_config(
    env: dict[str, str], *args: str, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    cli = _compose_cli()
    if cli is None:
        # .ci/run installs Debian's docker-compose when it runs as root; a developer
        # machine without it (and without root) cannot run this check.
        pytest.skip("no Compose CLI: neither docker-compose nor the docker compose plugin")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), *args, "config", *(["-q"] if quiet else [])],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "profile",
    [[], ["--profile", "monitoring"], ["--profile", "webhooks"]],
    ids=["default", "monitoring", "webhooks"],
)
def test_compose_cli_accepts_the_file(profile: list[str]) -> None:
    result = _compose_config(SECRETS, *profile)
    assert result.returncode == 0, f"compose config failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("missing", ["REDIS_PASSWORD", "API_KEYS"])
def test_a_missing_secret_stops_compose_with_its_name(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = _compose_config(env)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr + result.stdout


DEFAULT_SECRETS = {k: v for k, v in SECRETS.items() if k != "FLOWER_BASIC_AUTH"}
# ${VAR:?...} / ${VAR?...}: a variable compose refuses to start without.
_REQUIRED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")


def test_compose_requires_only_the_default_services_secrets() -> None:
    # Compose interpolates every service before it applies profiles (docker-compose 1.x
    # and docker compose 2.x alike), so a required variable of a profiled service would
    # be required by a plain `docker compose up` too.
    required = {name for text in _strings(_compose()) for name in _REQUIRED.findall(text)}
    assert required == set(DEFAULT_SECRETS)


def _strings(node: object) -> list[str]:
    """Every string value in the loaded file (what compose interpolates; not comments)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


@pytest.mark.parametrize(
    "profile", [[], ["--profile", "monitoring"]], ids=["default", "monitoring"]
)
def test_the_default_stack_needs_no_flower_password(profile: list[str]) -> None:
    result = _compose_config(DEFAULT_SECRETS, *profile)
    assert result.returncode == 0, f"compose config failed:\n{result.stdout}\n{result.stderr}"


def _rendered_flower(env: dict[str, str]) -> dict[str, Any]:
    """Flower's service as `docker compose --profile monitoring` hands it to Docker."""
    result = _compose_config(env, "--profile", "monitoring", quiet=False)
    assert result.returncode == 0, result.stderr
    flower = yaml.safe_load(result.stdout)["services"]["flower"]
    assert isinstance(flower, dict)
    return flower


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        (None, "set FLOWER_BASIC_AUTH (user:password) in .env"),
        ("", "set FLOWER_BASIC_AUTH (user:password) in .env"),
        ("admin", "FLOWER_BASIC_AUTH must be user:password"),
        (":pw", "FLOWER_BASIC_AUTH must be user:password"),
        ("admin:pw", None),
    ],
    ids=["unset", "empty", "no-password", "no-user", "set"],
)
def test_flower_asks_for_its_password_when_the_monitoring_profile_runs_it(
    value: str | None, refusal: str | None, tmp_path: Path
) -> None:
    env = (
        dict(DEFAULT_SECRETS) if value is None else {**DEFAULT_SECRETS, "FLOWER_BASIC_AUTH": value}
    )
    flower = _rendered_flower(env)
    assert flower.get("profiles") == ["monitoring"]
    # Run Flower's command as its container would ("$$" is compose's escape for "$"),
    # with a stand-in for the image's celery that shows what it was started with.
    command = [str(part).replace("$$", "$") for part in flower["command"]]
    celery = tmp_path / "celery"
    celery.write_text('#!/bin/sh\necho "celery $* auth=$FLOWER_BASIC_AUTH"\n', encoding="utf-8")
    celery.chmod(0o755)
    environment = {str(k): "" if v is None else str(v) for k, v in flower["environment"].items()}
    result = subprocess.run(
        command,
        env={**environment, "PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if refusal is None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "celery flower --port=5555 auth=admin:pw"
    else:
        assert result.returncode != 0
        assert refusal in result.stderr
        assert "celery" not in result.stdout, "Flower started without its password"


def test_webhook_worker_runs_only_in_its_profile_on_the_webhooks_queue() -> None:
    webhooks = _service("webhook-worker")
    assert webhooks.get("profiles") == ["webhooks"]
    command = _command("webhook-worker")
    assert command[: len(WORKER_ENTRY)] == WORKER_ENTRY
    assert command[command.index("-Q") + 1] == "webhooks"
    # The default worker serves every queue: no -Q.
    assert "-Q" not in _command("worker")
    assert _depends_on("webhook-worker")["redis"] == {"condition": "service_healthy"}
    assert "ports" not in webhooks


def test_worker_can_be_scaled() -> None:
    worker = _service("worker")
    assert "container_name" not in worker, "a fixed container_name breaks --scale worker=N"
    assert "ports" not in worker, "published ports clash between worker replicas"


def test_redis_is_durable_and_never_evicts() -> None:
    command = _service("redis").get("command")
    text = command if isinstance(command, str) else " ".join(str(part) for part in command or [])
    assert re.search(r"--appendonly\s+yes", text), "redis must run with --appendonly yes"
    assert re.search(r"--maxmemory-policy\s+noeviction", text), "redis must never evict keys"
    assert "--requirepass" in text, "redis must require a password"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_services_wait_for_a_healthy_redis(name: str) -> None:
    redis_dependency = _depends_on(name).get("redis")
    assert isinstance(redis_dependency, dict), f"{name} must depend on redis"
    assert redis_dependency.get("condition") == "service_healthy"
    assert "healthcheck" in _service("redis"), "service_healthy needs a redis healthcheck"


def test_worker_gets_time_to_finish_its_tasks() -> None:
    worker = _service("worker")
    assert worker.get("stop_grace_period"), "worker needs a stop_grace_period"
    # SIGTERM is a warm shutdown; the grace period must outlast its drain.
    assert "REMAP_SIGTERM" not in worker["environment"]
    grace = int(str(worker["stop_grace_period"]).removesuffix("s"))
    assert grace > int(worker["environment"]["TASK_TIME_LIMIT"]) + 5
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_worker_waits_for_mailpit() -> None:
    assert "mailpit" in _depends_on("worker")


@pytest.mark.parametrize(("name", "entry"), [("api", API_ENTRY), ("worker", WORKER_ENTRY)])
def test_commands_start_the_contract_entry_points(name: str, entry: list[str]) -> None:
    assert _command(name)[: len(entry)] == entry


@pytest.mark.parametrize("module", ["api_service.main", "worker_service"])
def test_entry_point_modules_exist(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"{module} is not importable"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_image_cmd_matches_compose_command(name: str) -> None:
    assert _dockerfile_cmd(DOCKERFILES[name]) == _command(name)


def test_env_example_lists_every_variable_compose_reads() -> None:
    read = set(_INTERPOLATION.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    listed = {
        match.group(1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if (match := _ENV_LINE.match(line)) and not line.lstrip().startswith("#")
    }
    assert read, "expected docker-compose.yml to read some variables"
    assert read <= listed, f".env.example is missing {sorted(read - listed)}"
