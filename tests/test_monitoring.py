"""deploy/monitoring/, checked without running Prometheus or Grafana.

The dashboard and the alert rules name metrics by string, so nothing but this module
notices when one of them names a metric the services do not serve: every metric name and
label in their PromQL is checked against the metric definitions in the source. promtool
(Debian's ``prometheus`` package, which .ci/run installs) checks the rules and the scrape
config and runs the rules' unit tests; without it those three tests skip and say so.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
RULES_TEST = MONITORING / "rules-test.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "email-dispatch.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "email-dispatch.yml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SOURCES = [ROOT / package / "src" for package in ("api_service", "worker_service")]

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
_KINDS = {"Counter", "Gauge", "Histogram", "Summary"}
_METRIC = re.compile(r"\b(email_dispatch_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def _series_of(kind: str, name: str) -> list[str]:
    """The series names prometheus-client exposes for one metric (``_created`` aside)."""
    if kind == "Counter":
        return [name.removesuffix("_total") + "_total"]
    if kind == "Histogram":
        return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
    if kind == "Summary":
        return [name, f"{name}_sum", f"{name}_count"]
    return [name]


def _string_list(node: ast.expr | None) -> set[str]:
    if isinstance(node, ast.List | ast.Tuple):
        return {
            elt.value
            for elt in node.elts
            if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
        }
    return set()


def _defined_metrics() -> dict[str, set[str]]:
    """Series name -> its label names, from every prometheus-client metric in the source."""
    series: dict[str, set[str]] = {}
    for path in (file for src in SOURCES for file in src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if kind not in _KINDS or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            labels = _string_list(node.args[2] if len(node.args) > 2 else None)
            labels |= next(
                (_string_list(kw.value) for kw in node.keywords if kw.arg == "labelnames"), set()
            )
            for name in _series_of(str(kind), first.value):
                extra = {"le"} if name.endswith("_bucket") else set()
                series[name] = labels | extra | TARGET_LABELS
    return series


def _known_metrics() -> dict[str, set[str]]:
    return _defined_metrics()


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))  # collapsed rows hold theirs


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _dashboard_exprs() -> dict[str, str]:
    return {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in _walk_panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    }


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _problems(where: str, expr: str, known: dict[str, set[str]]) -> list[str]:
    problems = []
    used_labels: set[str] = set()
    for name, selector in _METRIC.findall(expr):
        if name not in known:
            problems.append(f"{where}: {name} is served by neither the API nor the worker")
            continue
        used_labels |= known[name]
        for label in _MATCHER_LABEL.findall(selector):
            if label not in known[name]:
                problems.append(f"{where}: {name} has no label {label!r}")
    for grouping in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            if label not in used_labels:
                problems.append(f"{where}: no metric in the expression has label {label!r}")
    return problems


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not installed (Debian: apt-get install prometheus; .ci/run does "
            "it when run as root)"
        )
    return subprocess.run(
        [promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def test_the_source_scan_finds_the_metrics_definitions() -> None:
    # Guards the scan itself: were it to find nothing, every name check would be vacuous.
    from api_service.metrics import REGISTRY  # the in-process registry, safe to import

    defined = _defined_metrics()
    served = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    assert served - {name for name in served if name.endswith("_created")} <= set(defined)
    for worker_series in (
        "email_dispatch_worker_tasks_total",
        "email_dispatch_smtp_seconds_bucket",
    ):
        assert worker_series in defined
    assert defined["email_dispatch_worker_tasks_total"] >= {"task", "outcome"}


def test_dashboard_and_alerts_name_only_metrics_and_labels_the_services_serve() -> None:
    known = _known_metrics()
    exprs = _dashboard_exprs() | {f"alert {rule['alert']}": rule["expr"] for rule in _alert_rules()}
    problems = [
        problem for where, expr in exprs.items() for problem in _problems(where, expr, known)
    ]
    assert not problems, "\n".join(problems)


def test_the_dashboard_shows_what_operators_asked_for() -> None:
    used = {name for expr in _dashboard_exprs().values() for name, _ in _METRIC.findall(expr)}
    wanted = {
        "email_dispatch_submissions_total",  # submissions
        "email_dispatch_worker_tasks_total",  # outcomes
        "email_dispatch_queue_depth",
        "email_dispatch_workers_seen",
        "email_dispatch_smtp_seconds_bucket",  # SMTP latency quantiles
        "email_dispatch_quota_wait_seconds_bucket",
        "email_dispatch_webhook_deliveries_total",
        "email_dispatch_webhook_events_failed_total",
    }
    assert wanted <= used, f"no panel for {sorted(wanted - used)}"


def test_dashboard_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"]
    assert dashboard["title"]
    datasources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    uid = datasources[0]["uid"]
    panels = list(_walk_panels(dashboard["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        refs = [panel["datasource"], *(target["datasource"] for target in panel["targets"])]
        assert all(ref["uid"] == uid for ref in refs), f"{panel['title']}: not datasource {uid}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the dashboard"
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_alert_waits_and_says_what_is_wrong() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert "for" in rule, f"{rule['alert']}: say how long it must hold (for:)"
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_has_a_unit_test_that_sees_it_fire_and_stay_quiet() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for name in (rule["alert"] for rule in _alert_rules()):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name} is never seen firing"
        assert any(not case.get("exp_alerts") for case in mine), f"{name} is never seen quiet"


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    result = _promtool("check", "config", PROMETHEUS_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_services() -> dict[str, Any]:
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    assert isinstance(services, dict)
    return services


def test_prometheus_scrapes_the_api_and_every_worker_replica() -> None:
    from worker_service.settings import WorkerSettings

    jobs = {
        job["job_name"]: job
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    }
    api_command = _compose_services()["api"]["command"]
    api_port = api_command[api_command.index("--port") + 1]
    assert jobs["email-dispatch-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    # --scale worker=N: one DNS A record per replica, each scraped on its own.
    (discovery,) = jobs["email-dispatch-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["type"] == "A"
    assert "WORKER_METRICS_PORT" not in _compose_services()["worker"]["environment"]
    assert discovery["port"] == WorkerSettings.model_fields["worker_metrics_port"].default


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_monitoring_services_are_pinned_profiled_and_read_only(name: str) -> None:
    service = _compose_services()[name]
    assert service.get("profiles") == ["monitoring"]
    image = service["image"]
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin a version: {image}"
    binds = [volume for volume in service["volumes"] if volume.startswith("./")]
    assert binds, f"{name} mounts none of deploy/monitoring"
    for bind in binds:
        source, _, mode = bind.split(":")
        assert mode == "ro", f"{name}: mount {source} read-only"
        assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_grafana_mounts_what_its_provisioning_names() -> None:
    grafana = _compose_services()["grafana"]
    targets = {volume.split(":")[1] for volume in grafana["volumes"]}
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert {provider["options"]["path"] for provider in providers} <= targets
    assert "/etc/grafana/provisioning" in targets
    datasource = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"


def test_grafana_needs_its_password_only_in_its_profile() -> None:
    grafana = _compose_services()["grafana"]
    # No ${...:?} here: compose would then demand it for the default profile too.
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    entrypoint = " ".join(grafana["entrypoint"])
    assert "$${GF_SECURITY_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD" in entrypoint
    assert entrypoint.rstrip().endswith("exec /run.sh"), "then start Grafana as its image does"


def test_grafana_refuses_to_start_without_its_password() -> None:
    # The entrypoint's check, run by a real POSIX shell (compose turns $$ into $).
    script = " ".join(_compose_services()["grafana"]["entrypoint"][2:]).replace("$$", "$")
    script = script.replace("exec /run.sh", "echo started")
    sh = shutil.which("sh")
    assert sh is not None
    without = subprocess.run(
        [sh, "-c", script], env={"GF_SECURITY_ADMIN_PASSWORD": ""}, capture_output=True, text=True
    )
    assert without.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD" in without.stderr
    assert "started" not in without.stdout
    given = subprocess.run(
        [sh, "-c", script], env={"GF_SECURITY_ADMIN_PASSWORD": "pw"}, capture_output=True, text=True
    )
    assert given.returncode == 0
    assert given.stdout.strip() == "started"


def test_compose_config_needs_no_grafana_password() -> None:
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.skip("no docker-compose CLI (.ci/run installs Debian's when run as root)")
    secrets = {"REDIS_PASSWORD": "s3cret", "API_KEYS": "k1", "FLOWER_BASIC_AUTH": "admin:pw"}
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"} | secrets
    for profile in ([], ["--profile", "monitoring"]):
        result = subprocess.run(
            [cli, "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
