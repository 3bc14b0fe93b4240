"""deploy/k8s, checked without a cluster.

Core kinds are validated against the Kubernetes JSON schemas that kubernetes-validate
bundles (no network: every test here runs with sockets disabled). KEDA's kinds are not in
those schemas, so they are checked field by field. Then the cross-references: every
ConfigMap and Secret reference resolves, the selectors pick the right pods, the timing
rules of docs/delivery-guarantees.md hold for the values in the ConfigMap, the commands
are the contract entry points, the ScaledObject watches the queue the worker consumes,
and each container's effective environment passes its service's own settings validation.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from api_service.settings import ApiSettings
from shared_schemas.tasks import EMAIL_QUEUE, WEBHOOKS_QUEUE, queues
from worker_service.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
SECRET_EXAMPLE = K8S_DIR / "secret.example.yaml"

# The newest Kubernetes whose schemas kubernetes-validate bundles (1.37.0).
K8S_VERSION = "1.37"
KEDA_API_VERSION = "keda.sh/v1alpha1"

API_DEPLOYMENT = "email-api"
WORKER_DEPLOYMENT = "email-worker"
WEBHOOK_DEPLOYMENT = "email-webhook-worker"
# The contract entry points (README, docker-compose.yml, tests/test_compose.py).
API_ENTRY = ["uvicorn", "api_service.main:app"]
WORKER_ENTRY = ["celery", "-A", "worker_service", "worker"]
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
APP_UID = 10001  # USER 10001:10001 in both Dockerfiles

# Variables the manifests set that are not settings of either service, and who reads them.
NOT_SETTINGS = {
    "CELERY_WORKER_CONCURRENCY": "Celery's CLI, as `worker --concurrency`",
    "REDIS_ADDRESS": "KEDA's redis scaler (addressFromEnv)",
    "REDIS_PASSWORD": "KEDA's TriggerAuthentication",
}
# TriggerAuthentication parameters the KEDA redis scaler takes.
REDIS_AUTH_PARAMETERS = {
    "address",
    "host",
    "port",
    "username",
    "password",
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
}


# --- loading ------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return _str(self.doc.get("kind"), f"{self.path.name}: kind")

    @property
    def name(self) -> str:
        return _str(_map(self.doc.get("metadata"), f"{self.path.name}: metadata").get("name"), "")

    @property
    def label(self) -> str:
        return f"{self.path.name}:{self.kind}/{self.name}"


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def _map(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(f"{what} must be a mapping, not {type(value).__name__}")
    return value


def _seq(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(f"{what} must be a list, not {type(value).__name__}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(f"{what} must be a non-empty string, not {value!r}")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(f"{what} must be an integer, not {value!r}")
    return value


@cache
def _load(path: Path) -> tuple[Manifest, ...]:
    text = path.read_text(encoding="utf-8")
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert docs, f"{path.name} holds no document"
    return tuple(Manifest(path, _map(doc, f"{path.name}: a document")) for doc in docs)


@cache
def _kustomization() -> dict[str, Any]:
    return _map(yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8")), KUSTOMIZATION.name)


def _resource_paths() -> list[Path]:
    resources = _seq(_kustomization().get("resources"), "kustomization.yaml: resources")
    return [K8S_DIR / _str(entry, "kustomization.yaml: a resource") for entry in resources]


def _resources() -> list[Manifest]:
    """What `kubectl apply -k deploy/k8s` creates."""
    return [manifest for path in _resource_paths() for manifest in _load(path)]


def _secret_example() -> Manifest:
    (secret,) = _load(SECRET_EXAMPLE)
    assert secret.kind == "Secret", "secret.example.yaml must hold one Secret"
    return secret


def _all_manifests() -> list[Manifest]:
    return [*_resources(), _secret_example()]


def _one(kind: str, name: str | None = None) -> Manifest:
    found = [m for m in _resources() if m.kind == kind and (name is None or m.name == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in kustomization.yaml, got {found}"
    return found[0]


def _spec(manifest: Manifest) -> dict[str, Any]:
    return _map(manifest.doc.get("spec"), f"{manifest.label}: spec")


def _pod_template(deployment: Manifest) -> dict[str, Any]:
    return _map(_spec(deployment).get("template"), f"{deployment.label}: spec.template")


def _pod_spec(deployment: Manifest) -> dict[str, Any]:
    return _map(_pod_template(deployment).get("spec"), f"{deployment.label}: pod spec")


def _pod_labels(deployment: Manifest) -> dict[str, Any]:
    metadata = _map(_pod_template(deployment).get("metadata"), f"{deployment.label}: pod meta")
    return _map(metadata.get("labels"), f"{deployment.label}: pod labels")


def _container(deployment: Manifest) -> dict[str, Any]:
    containers = _seq(_pod_spec(deployment).get("containers"), f"{deployment.label}: containers")
    assert len(containers) == 1, f"{deployment.label}: expected one container"
    return _map(containers[0], f"{deployment.label}: container")


def _command(deployment: Manifest) -> list[str]:
    container = _container(deployment)
    parts = [*container.get("command", []), *container.get("args", [])]
    return [_str(part, f"{deployment.label}: a command part") for part in parts]


def _api() -> Manifest:
    return _one("Deployment", API_DEPLOYMENT)


def _worker() -> Manifest:
    return _one("Deployment", WORKER_DEPLOYMENT)


def _scaled_object() -> Manifest:
    return _one("ScaledObject")


def _trigger_authentication() -> Manifest:
    return _one("TriggerAuthentication")


def _redis_trigger() -> dict[str, Any]:
    triggers = _seq(_spec(_scaled_object()).get("triggers"), "ScaledObject: spec.triggers")
    assert len(triggers) == 1, "the ScaledObject scales on one trigger, the queue's length"
    return _map(triggers[0], "ScaledObject: triggers[0]")


def _redis_trigger_metadata() -> dict[str, Any]:
    return _map(_redis_trigger().get("metadata"), "ScaledObject: triggers[0].metadata")


# --- ConfigMaps, Secrets and the environment they make ------------------------------


def _config_maps() -> dict[str, dict[str, str]]:
    return {
        m.name: {
            key: _str(value, f"{m.label}: data.{key}")
            for key, value in _map(m.doc.get("data", {}), f"{m.label}: data").items()
        }
        for m in _resources()
        if m.kind == "ConfigMap"
    }


def _secret_data(secret: Manifest) -> dict[str, str]:
    data = {
        key: base64.b64decode(_str(value, f"{secret.label}: data.{key}")).decode()
        for key, value in _map(secret.doc.get("data", {}), f"{secret.label}: data").items()
    }
    string_data = _map(secret.doc.get("stringData", {}), f"{secret.label}: stringData")
    data.update({key: _str(value, f"{secret.label}: {key}") for key, value in string_data.items()})
    return data


def _secrets() -> dict[str, dict[str, str]]:
    """The Secrets the manifests may reference: the documented external one, by its example."""
    example = _secret_example()
    return {example.name: _secret_data(example)}


def _resolve_key_ref(
    ref: dict[str, Any], source: dict[str, dict[str, str]], what: str
) -> str | None:
    name = _str(ref.get("name"), f"{what}.name")
    key = _str(ref.get("key"), f"{what}.key")
    assert name in source, f"{what} names {name!r}, which is not defined (have {sorted(source)})"
    if key not in source[name]:
        assert ref.get("optional") is True, f"{what}: {name!r} has no key {key!r}"
        return None
    return source[name][key]


def _effective_env(deployment: Manifest) -> dict[str, str]:
    """The container's environment as the kubelet would build it from the manifests."""
    container = _container(deployment)
    config_maps, secrets = _config_maps(), _secrets()
    env: dict[str, str] = {}
    for index, source in enumerate(_seq(container.get("envFrom", []), "envFrom")):
        source = _map(source, f"{deployment.label}: envFrom[{index}]")
        if "configMapRef" in source:
            ref, known = _map(source["configMapRef"], "configMapRef"), config_maps
        else:
            ref, known = _map(source.get("secretRef"), "envFrom: secretRef"), secrets
        name = _str(ref.get("name"), f"{deployment.label}: envFrom[{index}] name")
        assert name in known, f"{deployment.label}: envFrom names {name!r}, which is not defined"
        env.update(known[name])
    for index, var in enumerate(_seq(container.get("env", []), "env")):
        var = _map(var, f"{deployment.label}: env[{index}]")
        name = _str(var.get("name"), f"{deployment.label}: env[{index}].name")
        what = f"{deployment.label}: env {name}"
        if "value" in var:
            env[name] = _str(var["value"], what)
            continue
        value_from = _map(var.get("valueFrom"), f"{what}: valueFrom")
        if "configMapKeyRef" in value_from:
            value = _resolve_key_ref(_map(value_from["configMapKeyRef"], what), config_maps, what)
        elif "secretKeyRef" in value_from:
            value = _resolve_key_ref(_map(value_from["secretKeyRef"], what), secrets, what)
        else:
            _fail(f"{what}: only configMapKeyRef and secretKeyRef are expected")
        if value is not None:
            env[name] = value
    return env


class _ApiSettingsFromManifest(ApiSettings):
    """ApiSettings read from the given values only, never from this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class _WorkerSettingsFromManifest(WorkerSettings):
    """WorkerSettings read from the given values only, never from this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _as_fields(env: dict[str, str]) -> dict[str, str]:
    # Settings names are case-insensitive in the environment; the fields are lower case.
    return {name.lower(): value for name, value in env.items()}


def _setting_names() -> set[str]:
    return {name.upper() for name in (*ApiSettings.model_fields, *WorkerSettings.model_fields)}


# --- the tests ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must need no network: any connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"network access during manifest validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_validation_runs_offline_against_bundled_schemas() -> None:
    assert f"{K8S_VERSION}.0" in kubernetes_validate.utils.all_versions(), (
        f"kubernetes-validate no longer bundles Kubernetes {K8S_VERSION}; pick a bundled one"
    )
    # The guard is live: a connection attempt here fails rather than leaves the machine.
    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("example.com", 443), timeout=1)


def test_kustomization_lists_every_manifest_and_no_secret() -> None:
    kustomization = _kustomization()
    assert kustomization.get("apiVersion") == "kustomize.config.k8s.io/v1beta1"
    assert kustomization.get("kind") == "Kustomization"
    paths = _resource_paths()
    for path in paths:
        assert path.is_file(), f"kustomization.yaml lists {path.name}, which does not exist"
    assert len(set(paths)) == len(paths), "kustomization.yaml lists a resource twice"
    on_disk = {p for p in K8S_DIR.glob("*.y*ml") if p not in (KUSTOMIZATION, SECRET_EXAMPLE)}
    assert set(paths) == on_disk, (
        f"manifests not in kustomization.yaml: {sorted(p.name for p in on_disk - set(paths))}"
    )
    assert SECRET_EXAMPLE not in paths, "the Secret example must not be applied"
    assert not [m for m in _resources() if m.kind == "Secret"], "secrets come by reference"

    names = [(m.kind, m.name) for m in _resources()]
    assert len(set(names)) == len(names), f"two objects share a kind and name: {names}"


def test_everything_lives_in_one_namespace() -> None:
    namespace = _one("Namespace").name
    assert _kustomization().get("namespace") == namespace
    for manifest in _all_manifests():
        if manifest.kind == "Namespace":
            continue
        metadata = _map(manifest.doc.get("metadata"), f"{manifest.label}: metadata")
        assert metadata.get("namespace") == namespace, f"{manifest.label}: namespace"


def test_kustomization_images_name_the_deployments_images() -> None:
    used = {
        _str(_container(m).get("image"), f"{m.label}: image").rsplit(":", 1)[0]
        for m in _resources()
        if m.kind == "Deployment"
    }
    images = _seq(_kustomization().get("images", []), "kustomization.yaml: images")
    pinned = {_str(_map(i, "an image").get("name"), "images[].name") for i in images}
    assert pinned == used, f"kustomization images {pinned} vs the Deployments' images {used}"


@pytest.mark.parametrize(
    "manifest",
    [m for m in _all_manifests() if not m.doc.get("apiVersion", "").startswith("keda.sh/")],
    ids=lambda m: m.label,
)
def test_core_kinds_match_the_kubernetes_schema(manifest: Manifest) -> None:
    problem = validated = None
    try:
        validated = kubernetes_validate.validate(manifest.doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top level)"
        problem = f"{where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        problem = str(exc.message)
    if problem is not None:  # reported outside the except: no 400-line schema dump
        pytest.fail(f"{manifest.label} is not valid Kubernetes {K8S_VERSION}: {problem}")
    assert validated == K8S_VERSION


def test_keda_objects_are_the_two_expected() -> None:
    keda = [m for m in _resources() if str(m.doc.get("apiVersion", "")).startswith("keda.sh/")]
    assert sorted(m.kind for m in keda) == ["ScaledObject", "TriggerAuthentication"]
    for manifest in keda:
        assert manifest.doc["apiVersion"] == KEDA_API_VERSION, manifest.label
        assert set(manifest.doc) <= {"apiVersion", "kind", "metadata", "spec"}, manifest.label


def test_scaled_object_scales_the_worker_on_the_email_queue() -> None:
    scaled = _scaled_object()
    spec = _spec(scaled)
    assert set(spec) <= {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }, f"unknown ScaledObject fields: {sorted(spec)}"

    target = _map(spec.get("scaleTargetRef"), "ScaledObject: spec.scaleTargetRef")
    assert target.get("name") == WORKER_DEPLOYMENT
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert "replicas" not in _spec(_worker()), (
        "the HPA KEDA creates owns the worker's replica count; `replicas` would reset it"
    )

    low = _int(spec.get("minReplicaCount"), "minReplicaCount")
    high = _int(spec.get("maxReplicaCount"), "maxReplicaCount")
    assert 0 <= low <= high
    assert high >= 1
    assert _int(spec.get("pollingInterval"), "pollingInterval") > 0
    assert _int(spec.get("cooldownPeriod"), "cooldownPeriod") > 0
    if "fallback" in spec:
        fallback = _map(spec["fallback"], "ScaledObject: spec.fallback")
        assert _int(fallback.get("failureThreshold"), "fallback.failureThreshold") > 0
        assert low <= _int(fallback.get("replicas"), "fallback.replicas") <= high

    trigger = _redis_trigger()
    assert trigger.get("type") == "redis"
    metadata = _redis_trigger_metadata()
    for key, value in metadata.items():
        assert isinstance(value, str), f"KEDA trigger metadata values are strings: {key}"
    assert metadata.get("listName") == EMAIL_QUEUE == "email"
    assert int(_str(metadata.get("listLength"), "listLength")) > 0
    assert ("address" in metadata) != ("addressFromEnv" in metadata), "one of address(FromEnv)"
    assert not {"password", "passwordFromEnv"} & set(metadata), (
        "the Redis password comes through the TriggerAuthentication"
    )
    auth_ref = _map(trigger.get("authenticationRef"), "triggers[0].authenticationRef")
    assert auth_ref.get("name") == _trigger_authentication().name
    assert auth_ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"


def test_worker_consumes_the_queue_its_scaled_object_watches() -> None:
    command = _command(_worker())
    assert "-Q" in command, "the worker Deployment names its queue (-Q)"
    queues = command[command.index("-Q") + 1].split(",")
    assert queues == [_redis_trigger_metadata()["listName"]] == [EMAIL_QUEUE]


def test_trigger_authentication_takes_the_password_from_the_secret() -> None:
    auth = _trigger_authentication()
    refs = _seq(_spec(auth).get("secretTargetRef"), f"{auth.label}: spec.secretTargetRef")
    secrets = _secrets()
    parameters = {}
    for index, ref in enumerate(refs):
        ref = _map(ref, f"{auth.label}: secretTargetRef[{index}]")
        parameter = _str(ref.get("parameter"), "secretTargetRef.parameter")
        assert parameter in REDIS_AUTH_PARAMETERS, f"the redis scaler takes no {parameter!r}"
        parameters[parameter] = _resolve_key_ref(ref, secrets, f"{auth.label}: {parameter}")
    assert parameters.get("password"), "the TriggerAuthentication supplies the Redis password"

    # The password KEDA uses is the one in the services' broker URL.
    broker = urlsplit(_secrets()[_secret_example().name]["CELERY_BROKER_URL"])
    assert broker.password == parameters["password"]


def test_keda_reads_the_redis_the_services_use() -> None:
    metadata = _redis_trigger_metadata()
    worker_env = _effective_env(_worker())
    if "addressFromEnv" in metadata:
        variable = metadata["addressFromEnv"]
        explicit = {var.get("name") for var in _container(_worker()).get("env", [])}
        assert variable in explicit, f"{variable} must be set on the worker container itself"
        address = worker_env[variable]
    else:
        address = _str(metadata.get("address"), "address")
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        url = urlsplit(worker_env[name])
        assert url.scheme in ("redis", "rediss"), name
        assert f"{url.hostname}:{url.port or 6379}" == address, f"{name} vs the KEDA address"
        assert (url.path.strip("/") or "0") == metadata.get("databaseIndex", "0"), name
    assert (metadata.get("enableTLS", "false") == "true") == (
        urlsplit(worker_env["CELERY_BROKER_URL"]).scheme == "rediss"
    )


def test_every_reference_names_a_defined_object_and_key() -> None:
    # _effective_env fails on any envFrom, configMapKeyRef or secretKeyRef that does not
    # resolve; volumes may only be emptyDirs (no hidden ConfigMap or Secret references).
    external_secret = _secret_example().name
    defined = {(m.kind, m.name) for m in _resources()}
    assert ("Secret", external_secret) not in defined
    for deployment in (_api(), _worker()):
        _effective_env(deployment)
        for volume in _seq(_pod_spec(deployment).get("volumes", []), "volumes"):
            assert set(_map(volume, "a volume")) == {"name", "emptyDir"}, volume
    for ref in _seq(_spec(_trigger_authentication()).get("secretTargetRef"), "refs"):
        assert _map(ref, "a secretTargetRef").get("name") == external_secret


def test_every_variable_is_a_setting_of_a_service() -> None:
    known = _setting_names() | set(NOT_SETTINGS)
    for name, data in _config_maps().items():
        unknown = set(data) - known
        assert not unknown, f"ConfigMap {name}: no service reads {sorted(unknown)}"
    for name, data in _secrets().items():
        unknown = set(data) - known
        assert not unknown, f"Secret {name}: no service reads {sorted(unknown)}"


def test_api_environment_passes_the_api_settings() -> None:
    env = _effective_env(_api())
    assert "API_KEYS" in env
    assert "CELERY_BROKER_URL" in env
    assert "SMTP_PASSWORD" not in env, "the API gets no SMTP credentials"
    _ApiSettingsFromManifest.model_validate(_as_fields(env))


def test_worker_environment_passes_the_worker_settings() -> None:
    env = _effective_env(_worker())
    assert "API_KEYS" not in env, "the worker gets no API keys"
    settings = _WorkerSettingsFromManifest.model_validate(_as_fields(env))
    assert settings.celery_broker_url.startswith("redis")
    assert int(env["CELERY_WORKER_CONCURRENCY"]) >= 1


def test_visibility_timeout_exceeds_the_longest_unacked_hold() -> None:
    env = _effective_env(_worker())
    visibility = float(env["CELERY_VISIBILITY_TIMEOUT"])
    longest_hold = float(env["EMAIL_RETRY_MAX_DELAY"]) + float(env["TASK_TIME_LIMIT"])
    assert visibility > longest_hold, (
        f"CELERY_VISIBILITY_TIMEOUT {visibility:g} must exceed EMAIL_RETRY_MAX_DELAY + "
        f"TASK_TIME_LIMIT = {longest_hold:g}"
    )
    # Both services read it; they must agree.
    assert _effective_env(_api())["CELERY_VISIBILITY_TIMEOUT"] == env["CELERY_VISIBILITY_TIMEOUT"]


def test_worker_grace_period_outlasts_the_drain() -> None:
    grace = _int(_pod_spec(_worker()).get("terminationGracePeriodSeconds"), "grace period")
    time_limit = int(_effective_env(_worker())["TASK_TIME_LIMIT"])
    assert grace > time_limit, f"grace {grace}s must exceed TASK_TIME_LIMIT {time_limit}s"


def test_commands_are_the_contract_entry_points() -> None:
    api = _command(_api())
    assert api[: len(API_ENTRY)] == API_ENTRY, api
    worker = _command(_worker())
    assert worker[: len(WORKER_ENTRY)] == WORKER_ENTRY, worker
    # Concurrency comes from CELERY_WORKER_CONCURRENCY (ConfigMap), not the command line.
    assert not {"--concurrency", "-c"} & set(worker), worker
    ports = _seq(_container(_api()).get("ports"), "API ports")
    assert int(api[api.index("--port") + 1]) == _map(ports[0], "port").get("containerPort")
    assert api[api.index("--host") + 1] == "0.0.0.0"  # a pod listens on its own IP
    assert "ports" not in _container(_worker()), "the worker serves nothing through a Service"


def test_service_selects_the_api_pods_only() -> None:
    service = _one("Service")
    spec = _spec(service)
    selector = _map(spec.get("selector"), f"{service.label}: selector")
    assert selector, "a Service without a selector selects nothing"
    assert selector.items() <= _pod_labels(_api()).items(), "the Service misses the API pods"
    assert not selector.items() <= _pod_labels(_worker()).items(), "it selects workers too"
    port_names = {p.get("name") for p in _container(_api()).get("ports", [])}
    port_numbers = {p.get("containerPort") for p in _container(_api()).get("ports", [])}
    for port in _seq(spec.get("ports"), f"{service.label}: ports"):
        target = _map(port, "a Service port").get("targetPort")
        assert target in port_names | port_numbers, f"targetPort {target!r} is no API port"


def test_pod_disruption_budget_selects_the_worker_pods_only() -> None:
    pdb = _one("PodDisruptionBudget")
    spec = _spec(pdb)
    assert ("minAvailable" in spec) != ("maxUnavailable" in spec), "one of the two budgets"
    match = _map(_map(spec.get("selector"), "PDB selector").get("matchLabels"), "matchLabels")
    assert match, "a PDB without matchLabels would cover every pod of the namespace"
    assert match.items() <= _pod_labels(_worker()).items(), "the PDB misses the workers"
    assert not match.items() <= _pod_labels(_api()).items(), "the PDB covers the API too"


def test_deployment_selectors_match_their_pods_and_not_each_other() -> None:
    api, worker = _api(), _worker()
    for deployment, other in ((api, worker), (worker, api)):
        selector = _map(_spec(deployment).get("selector"), f"{deployment.label}: selector")
        match = _map(selector.get("matchLabels"), f"{deployment.label}: matchLabels")
        assert match.items() <= _pod_labels(deployment).items(), deployment.label
        assert not match.items() <= _pod_labels(other).items(), f"{deployment.label} overlaps"


@pytest.mark.parametrize("name", [API_DEPLOYMENT, WORKER_DEPLOYMENT, WEBHOOK_DEPLOYMENT])
def test_pods_run_unprivileged_with_bounded_resources(name: str) -> None:
    deployment = _one("Deployment", name)
    pod = _pod_spec(deployment)
    assert pod.get("automountServiceAccountToken") is False, "no API token in the pods"
    pod_security = _map(pod.get("securityContext"), f"{name}: pod securityContext")
    assert pod_security.get("runAsNonRoot") is True
    assert pod_security.get("runAsUser") == APP_UID
    container = _container(deployment)
    security = _map(container.get("securityContext"), f"{name}: container securityContext")
    assert security.get("allowPrivilegeEscalation") is False
    assert security.get("readOnlyRootFilesystem") is True
    assert _map(security.get("capabilities"), "capabilities").get("drop") == ["ALL"]
    # A read-only root needs a writable /tmp (tempfile; the worker's pool and metrics files).
    mounts = {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts", [])}
    volumes = {v.get("name"): v for v in pod.get("volumes", [])}
    assert "emptyDir" in volumes.get(mounts.get("/tmp"), {}), f"{name}: /tmp is not writable"
    resources = _map(container.get("resources"), f"{name}: resources")
    for bound in ("requests", "limits"):
        assert set(_map(resources.get(bound), f"{name}: {bound}")) >= {"cpu", "memory"}, bound


def test_api_probes_use_the_health_endpoints() -> None:
    container = _container(_api())
    port_names = {p.get("name") for p in container.get("ports", [])}

    def http_path(probe_name: str) -> str:
        probe = _map(container.get(probe_name), f"email-api: {probe_name}")
        http_get = _map(probe.get("httpGet"), f"email-api: {probe_name}.httpGet")
        assert http_get.get("port") in port_names | {8000}, probe_name
        return _str(http_get.get("path"), f"{probe_name}.path")

    # /healthz never touches Redis, so a Redis outage never restarts the API; /readyz
    # takes a pod out of the Service while it cannot queue mail.
    assert http_path("startupProbe") == HEALTH_PATH
    assert http_path("livenessProbe") == HEALTH_PATH
    assert http_path("readinessProbe") == READY_PATH
    # /readyz answers within REDIS_TIMEOUT; the probe must wait at least that long.
    timeout = _int(_map(container["readinessProbe"], "").get("timeoutSeconds", 1), "timeout")
    assert timeout > float(_effective_env(_api())["REDIS_TIMEOUT"])


def test_worker_liveness_pings_its_own_celery_node() -> None:
    worker = _worker()
    probe = _map(_container(worker).get("livenessProbe"), "email-worker: livenessProbe")
    command = " ".join(_seq(_map(probe.get("exec"), "exec").get("command"), "exec.command"))
    assert command.startswith("sh -c exec celery "), command
    assert " inspect ping " in command, command
    assert "celery@${HOSTNAME}" in command or "celery@$HOSTNAME" in command, (
        "the probe must ask this pod's node only (Celery's default node name is celery@%h)"
    )
    # Importing worker_service in every probe would run its start-up code each minute
    # (it leaves a metrics file in /tmp per run); the broker URL is all a ping needs.
    assert "worker_service" not in command, command
    # The whole failure window outlasts a drain, so a probe never cuts a warm shutdown short.
    window = _int(probe.get("periodSeconds"), "periodSeconds") * _int(
        probe.get("failureThreshold"), "failureThreshold"
    )
    assert window > _int(_pod_spec(worker).get("terminationGracePeriodSeconds"), "grace")
    assert _int(probe.get("timeoutSeconds"), "timeoutSeconds") >= 10


def test_webhook_worker_is_a_deployment_of_its_own_queue() -> None:
    webhooks = _one("Deployment", WEBHOOK_DEPLOYMENT)
    command = _command(webhooks)
    assert command[: len(WORKER_ENTRY)] == WORKER_ENTRY, command
    assert command[command.index("-Q") + 1] == WEBHOOKS_QUEUE
    assert not {"--concurrency", "-c"} & set(command), command
    assert "ports" not in _container(webhooks)
    # Every queue of the contract is served by exactly one Deployment.
    served = sorted(
        _command(m)[_command(m).index("-Q") + 1]
        for m in _resources()
        if m.kind == "Deployment" and m.name != API_DEPLOYMENT
    )
    assert served == queues() == sorted([EMAIL_QUEUE, WEBHOOKS_QUEUE])
    # Its pods are its own: no other Deployment, the Service or the email PDB takes them.
    match = _map(_map(_spec(webhooks).get("selector"), "selector").get("matchLabels"), "labels")
    assert match.items() <= _pod_labels(webhooks).items()
    for other in (_api(), _worker()):
        assert not match.items() <= _pod_labels(other).items(), other.label
        theirs = _map(_map(_spec(other).get("selector"), "selector").get("matchLabels"), "")
        assert not theirs.items() <= _pod_labels(webhooks).items(), other.label
    env = _effective_env(webhooks)
    assert "API_KEYS" not in env
    assert "SMTP_PASSWORD" not in env, "the webhook worker sends no mail"
    settings = _WorkerSettingsFromManifest.model_validate(_as_fields(env))
    assert settings.webhook_allow_private_networks is False
    api = _ApiSettingsFromManifest.model_validate(_as_fields(_effective_env(_api())))
    assert api.webhook_allow_private_networks is settings.webhook_allow_private_networks
    grace = _int(_pod_spec(webhooks).get("terminationGracePeriodSeconds"), "grace period")
    assert grace > settings.webhook_timeout
