"""The benchmark's best-of-rounds rule (bench.report.best_of)."""

from __future__ import annotations

from bench.report import best_of


def test_each_figure_is_its_best_round_and_a_drains_cores_come_with_its_rate() -> None:
    rounds: list[dict[str, float | None]] = [
        {
            "project.drain_2x1_per_s": 1000.0,
            "project.drain_2x1_cpu_us_per_task": 900.0,
            "project.drain_2x1_cores": 1.9,
            "baseline.noop_drain_per_s": 900.0,
            "baseline.noop_cores": 1.2,
        },
        {
            "project.drain_2x1_per_s": 1200.0,
            "project.drain_2x1_cpu_us_per_task": 1000.0,
            "project.drain_2x1_cores": 1.7,
            "baseline.noop_drain_per_s": 1100.0,
            "baseline.noop_cores": 1.3,
        },
    ]
    best = best_of(rounds)
    assert best["project.drain_2x1_per_s"] == 1200.0  # the most per second
    assert best["project.drain_2x1_cpu_us_per_task"] == 900.0  # the least CPU
    # Neither more nor fewer cores is better: they describe the fastest drain.
    assert best["project.drain_2x1_cores"] == 1.7
    assert best["baseline.noop_cores"] == 1.3
