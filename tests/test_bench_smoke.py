"""`make bench` keeps working: its smoke mode runs every phase once, tiny and untimed.

It starts its own redis-server, SMTP sink, APIs, workers and k6. Nothing here asserts on
speed: the figures of a one-second run on a shared machine mean nothing; only that each
one was measured and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

# The figures the benchmark issue asks for, by the keys bench/results/latest.json uses.
FIGURES = [
    # enqueue at 64 connections, /healthz under that load, CPU per request
    "project.enqueue_rps",
    "project.enqueue_p50_ms",
    "project.enqueue_p99_ms",
    "project.healthz_p99_ms",
    "project.enqueue_cpu_us_per_request",
    "baseline.enqueue_rps",
    "baseline.enqueue_p50_ms",
    "baseline.enqueue_p99_ms",
    "baseline.enqueue_cpu_us_per_request",
    # the floors
    "floor.constant_rps",
    "floor.constant_cpu_us_per_request",
    "floor.send_task_cpu_us",
    "floor.lpush_per_s",
    "floor.enqueue_rps",
    "baseline.noop_drain_per_s",
    # status reads
    "project.status_rps",
    "baseline.status_rps",
    # drains of real mails through SMTP, CPU per task
    "project.drain_1x1_per_s",
    "project.drain_2x1_per_s",
    "project.drain_1x2_per_s",
    "project.drain_1x1_cpu_us_per_task",
    "baseline.noop_cpu_us_per_task",
    # end to end at low load
    "project.e2e_p50_ms",
    "project.e2e_p99_ms",
    # batches of 500 against single submissions (issue 18; bench.batch_phase)
    "project.batch_mails_per_s",
    "project.batch_single_mails_per_s",
    "project.batch_ratio",
]


@pytest.mark.timeout(240)
def test_bench_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    result = json.loads((tmp_path / "latest.json").read_text())
    assert result["meta"]["mode"] == "smoke"
    assert result["meta"]["errors"] == []
    figures = result["figures"]
    from bench.report import REQUIRED_FIGURES

    for key in {*FIGURES, *REQUIRED_FIGURES}:
        assert key in figures, key
        assert isinstance(figures[key], int | float), f"{key} was not measured: {figures[key]}"
        assert figures[key] >= 0, key
    assert len(result["targets"]) == 9, "one verdict per target of the issues"
    # The relay rounds (issue #15): the shipped worker command, relay on localhost and
    # 50 ms away, then three nodes with SMTP_RATE_LIMIT.
    from bench.report import RELAY_FIGURES

    for key in RELAY_FIGURES:
        assert isinstance(figures[key], int | float), f"{key} was not measured: {figures[key]}"
        assert figures[key] > 0, key
    assert len(result["relay_targets"]) == 4, "one verdict per target of issue #15"
    assert "enqueue req/s: project ÷ baseline" in result["ratios"]

    table = (tmp_path / "latest.md").read_text()
    assert "| Figure | Project | Baseline | Floor |" in table
    assert "| Target | Goal | Measured | Holds |" in table
    assert "| Relay target | Goal | Measured | Holds |" in table
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
