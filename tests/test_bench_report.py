"""The benchmark's best-of-rounds rule (bench.report.best_of), and the arithmetic of its
relay rounds' targets and the batch target."""

from __future__ import annotations

from bench.report import RELAY_TARGETS, best_of, busiest_second, verdicts


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


def test_the_busiest_second_of_a_drain_slides_across_calendar_seconds() -> None:
    # Three mails late in one second and three early in the next: no calendar second
    # holds more than three, a one-second window holds all six.
    arrivals = [100.7, 100.8, 100.9, 101.1, 101.2, 101.3, 102.5]
    assert busiest_second(arrivals) == (6, 3)
    assert busiest_second([5.0, 6.0, 7.0]) == (1, 1)  # [t, t + 1): the next is out
    assert busiest_second([]) == (0, 0)


def test_the_relay_targets_of_issue_15() -> None:
    fig: dict[str, float | None] = {
        "relay.rtt50_over_rtt0": 0.85,
        "relay.rss_rtt0_peak_mb": 180.0,
        "relay.rss_rtt50_peak_mb": 260.0,
        "relay.rate_limit_per_s": 19.5,
        "relay.rate_limit_max_1s": 31.0,
    }
    holds = [v["holds"] for v in verdicts(fig, RELAY_TARGETS)]
    assert holds == [True, False, True, False]  # the larger RSS counts; 31 > 30
    fig["relay.rss_rtt50_peak_mb"] = None
    assert verdicts(fig, RELAY_TARGETS)[1]["holds"] is None  # not measured: no verdict


def test_the_batch_target_of_issue_18_is_a_verdict_not_a_broken_run() -> None:
    from bench.report import TARGETS

    (batch,) = [t for t in TARGETS if t.name.startswith("Batches of 500")]
    fig: dict[str, float | None] = {
        "project.batch_mails_per_s": 13_042.0,
        "project.batch_single_mails_per_s": 1_313.0,
    }
    (verdict,) = verdicts(fig, [batch])
    assert round(verdict["measured"], 1) == 9.9
    assert verdict["holds"] is False
    fig["project.batch_mails_per_s"] = 15_210.0
    assert verdicts(fig, [batch])[0]["holds"] is True
