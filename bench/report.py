"""Turn the measured figures into ratios, target verdicts, a markdown table and a chart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Figures = dict[str, float | None]
TIMES = "\N{MULTIPLICATION SIGN}"
COUNT = "count"  # a unit: a whole number, shown without decimals

# Every figure a run reports (the smoke test checks that each one is there).
REQUIRED_FIGURES = [
    # enqueue: POST /send-email from 64 connections
    "project.enqueue_rps",
    "project.enqueue_p50_ms",
    "project.enqueue_p99_ms",
    "project.healthz_p99_ms",
    "project.enqueue_cpu_us_per_request",
    "project.enqueue_redis_cpu_us_per_request",
    "baseline.enqueue_rps",
    "baseline.enqueue_p50_ms",
    "baseline.enqueue_p99_ms",
    "baseline.healthz_p99_ms",
    "baseline.enqueue_cpu_us_per_request",
    "baseline.enqueue_redis_cpu_us_per_request",
    "floor.constant_rps",
    "floor.constant_p50_ms",
    "floor.constant_p99_ms",
    "floor.constant_healthz_p99_ms",
    "floor.constant_cpu_us_per_request",
    "floor.send_task_cpu_us",
    "floor.send_task_per_s",
    "floor.send_task_with_backend_cpu_us",
    "project.send_task_cpu_us",
    "project.publish_alone_cpu_us",
    "project.publish_batched_cpu_us",
    "floor.lpush_per_s",
    "floor.lpush_cpu_us",
    "floor.enqueue_rps",
    "floor.enqueue_cpu_us_per_request",
    # status reads: GET /task-status/<id> of finished tasks from 64 connections
    "project.status_rps",
    "project.status_p50_ms",
    "project.status_p99_ms",
    "project.status_cpu_us_per_request",
    "baseline.status_rps",
    "baseline.status_p50_ms",
    "baseline.status_p99_ms",
    "baseline.status_cpu_us_per_request",
    # drains: N queued tasks, workers started, time until the last is done
    "project.drain_1x1_per_s",
    "project.drain_2x1_per_s",
    "project.drain_1x2_per_s",
    "project.drain_1x1_per_s_per_process",
    "project.drain_2x1_per_s_per_process",
    "project.drain_1x2_per_s_per_process",
    "project.drain_1x1_cpu_us_per_task",
    "project.drain_2x1_cpu_us_per_task",
    "project.drain_1x2_cpu_us_per_task",
    "project.drain_1x1_redis_cpu_us_per_task",
    "project.drain_1x1_smtp_cpu_us_per_task",
    # CPU-seconds per second during each drain (workers, Redis, the SMTP sink): how
    # much of the machine's cores the drain kept busy
    "project.drain_1x1_cores",
    "project.drain_2x1_cores",
    "project.drain_1x2_cores",
    # the same 1 x 1 drain through aiosmtpd, the SMTP server the tests use (smtp_sink)
    "project.drain_1x1_aiosmtpd_per_s",
    "project.drain_1x1_aiosmtpd_cpu_us_per_task",
    "project.drain_1x1_aiosmtpd_smtp_cpu_us_per_task",
    "baseline.noop_drain_per_s",
    "baseline.noop_cpu_us_per_task",
    "baseline.noop_redis_cpu_us_per_task",
    "baseline.noop_cores",
    # end to end at low load: POST sent to SUCCESS stored (and seen by polling)
    "project.e2e_p50_ms",
    "project.e2e_p99_ms",
    "project.e2e_observed_p50_ms",
    "project.e2e_observed_p99_ms",
    "baseline.e2e_p50_ms",
    "baseline.e2e_p99_ms",
    "baseline.e2e_observed_p50_ms",
    "baseline.e2e_observed_p99_ms",
    # Redis commands per request and per task (what the server did for each)
    "project.enqueue_redis_commands_per_request",
    "baseline.enqueue_redis_commands_per_request",
    "project.drain_1x1_redis_commands_per_task",
    "baseline.noop_redis_commands_per_task",
]

# The relay rounds (issue #15): the shipped worker command (no --concurrency, no --pool),
# one node, draining to the SMTP sink on loopback and through a latency proxy 50 ms
# away; then three nodes with SMTP_RATE_LIMIT=20 through the proxy. Measured once per
# run (after the rounds), so not part of best_of.
RELAY_FIGURES = [
    "relay.drain_rtt0_per_s",
    "relay.drain_rtt50_per_s",
    "relay.rtt50_over_rtt0",
    # the node's processes (main + pool children), VmRSS summed, largest sample
    "relay.rss_rtt0_peak_mb",
    "relay.rss_rtt50_peak_mb",
    "relay.pss_rtt0_peak_mb",  # PSS: pages shared after fork split between processes
    "relay.pss_rtt50_peak_mb",
    "relay.node_processes",
    # rate-limited: first to last mail at the sink, and the busiest second
    "relay.rate_limit_per_s",
    "relay.rate_limit_max_1s",
    "relay.rate_limit_max_calendar_s",
    "relay.rate_limit_rss_peak_mb",
]

# Figures a run reports when it can (the project's end-to-end steps, from its status).
OPTIONAL_FIGURES = [
    "project.e2e_accept_p50_ms",
    "project.e2e_queue_p50_ms",
    "project.e2e_send_p50_ms",
    "project.e2e_finish_p50_ms",
]


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _higher_is_better(key: str) -> bool:
    return key.endswith(("_rps", "_per_s", "_per_process", "_per_core"))


def _rate_key(key: str) -> str | None:
    """The rate a drain's cores figure belongs to: it is taken from that rate's best
    round, as it describes that drain rather than being better high or low."""
    if key.endswith("_cores"):
        return key.removesuffix("_cores") + (
            "_drain_per_s" if key.startswith("baseline.") else "_per_s"
        )
    return None


def best_of(rounds: list[Figures]) -> Figures:
    """Each figure at its best round: the most per second, the least time and CPU.

    The machine drifts over minutes (10-30 %, measured), and a round's phases run one
    after another, so a slow spell can fall on one side of a ratio. The best of each
    side is its least disturbed measurement; both sides get the same treatment. Every
    round's figures are kept in the JSON (meta.rounds)."""
    best: Figures = {}
    for key in rounds[0]:
        rate_key = _rate_key(key)
        if rate_key is not None:
            measured = [fig for fig in rounds if fig.get(rate_key) is not None]
            fastest = max(measured, key=lambda fig: fig[rate_key] or 0, default=None)
            best[key] = fastest.get(key) if fastest is not None else None
            continue
        values = [value for fig in rounds if (value := fig.get(key)) is not None]
        if not values:
            best[key] = None
        else:
            best[key] = max(values) if _higher_is_better(key) else min(values)
    return best


def derive(fig: Figures) -> None:
    """Figures computed from others: the enqueue floor and per-process drain rates."""
    const_rps = fig.get("floor.constant_rps")
    send_s = (fig.get("floor.send_task_cpu_us") or 0) / 1e6
    if const_rps:
        # One request = the constant endpoint's cost as served (1 / its req/s, under the
        # same load generator on the same machine) + the CPU of one bare send_task.
        fig["floor.enqueue_rps"] = 1 / (1 / const_rps + send_s)
    else:
        fig["floor.enqueue_rps"] = None
    const_cpu = fig.get("floor.constant_cpu_us_per_request")
    send_cpu = fig.get("floor.send_task_cpu_us")
    fig["floor.enqueue_cpu_us_per_request"] = (
        const_cpu + send_cpu if const_cpu is not None and send_cpu is not None else None
    )
    for topology, processes in (("1x1", 1), ("2x1", 2), ("1x2", 2)):
        rate = fig.get(f"project.drain_{topology}_per_s")
        fig[f"project.drain_{topology}_per_s_per_process"] = _div(rate, processes)
        # Mails per second for each core the drain kept busy: whether more nodes or
        # processes cost more per mail, apart from the cores they are given.
        fig[f"project.drain_{topology}_per_core"] = _div(
            rate, fig.get(f"project.drain_{topology}_cores")
        )


def busiest_second(arrivals: Sequence[float]) -> tuple[int, int]:
    """The most arrivals in any window of one second (sliding: [t, t + 1) for every t),
    and in any calendar second of the wall clock (the same or fewer)."""
    times = sorted(arrivals)
    sliding = 0
    start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        sliding = max(sliding, end - start + 1)
    calendar = max(Counter(int(t) for t in times).values(), default=0)
    return sliding, calendar


# (name, numerator, denominator)
_RATIOS = [
    ("enqueue req/s: project ÷ baseline", "project.enqueue_rps", "baseline.enqueue_rps"),
    ("enqueue req/s: project ÷ floor", "project.enqueue_rps", "floor.enqueue_rps"),
    ("enqueue req/s: project ÷ constant endpoint", "project.enqueue_rps", "floor.constant_rps"),
    ("enqueue p99: project ÷ baseline", "project.enqueue_p99_ms", "baseline.enqueue_p99_ms"),
    (
        "/healthz p99 under load: project ÷ baseline",
        "project.healthz_p99_ms",
        "baseline.healthz_p99_ms",
    ),
    (
        "enqueue CPU/request: project ÷ baseline",
        "project.enqueue_cpu_us_per_request",
        "baseline.enqueue_cpu_us_per_request",
    ),
    (
        "enqueue CPU/request: project ÷ floor",
        "project.enqueue_cpu_us_per_request",
        "floor.enqueue_cpu_us_per_request",
    ),
    ("status req/s: project ÷ baseline", "project.status_rps", "baseline.status_rps"),
    ("status req/s: project ÷ constant endpoint", "project.status_rps", "floor.constant_rps"),
    (
        "status CPU/request: project ÷ baseline",
        "project.status_cpu_us_per_request",
        "baseline.status_cpu_us_per_request",
    ),
    (
        "mails/s per process (1 node, 1 process) ÷ baseline no-op tasks/s per process",
        "project.drain_1x1_per_s_per_process",
        "baseline.noop_drain_per_s",
    ),
    (
        "the same, through aiosmtpd ÷ baseline no-op tasks/s per process",
        "project.drain_1x1_aiosmtpd_per_s",
        "baseline.noop_drain_per_s",
    ),
    (
        "drain: 2 nodes ÷ 1 node (1 process each)",
        "project.drain_2x1_per_s",
        "project.drain_1x1_per_s",
    ),
    (
        "drain per busy core: 2 nodes ÷ 1 node",
        "project.drain_2x1_per_core",
        "project.drain_1x1_per_core",
    ),
    (
        "drain: 2 processes ÷ 1 process (1 node)",
        "project.drain_1x2_per_s",
        "project.drain_1x1_per_s",
    ),
    (
        "CPU per task: real mail ÷ baseline no-op",
        "project.drain_1x1_cpu_us_per_task",
        "baseline.noop_cpu_us_per_task",
    ),
    ("end to end p50: project ÷ baseline", "project.e2e_p50_ms", "baseline.e2e_p50_ms"),
]


def ratios(fig: Figures) -> dict[str, float | None]:
    return {name: _div(fig.get(num), fig.get(den)) for name, num, den in _RATIOS}


@dataclass(frozen=True)
class Target:
    name: str
    measured: Callable[[Figures], float | None]
    holds: Callable[[float], bool]
    goal: str
    unit: str | None = None  # of the measured value; None: ms if the goal is in ms, else times


TARGETS = [
    Target(
        "Enqueue ≥ 2.5 times the baseline",
        lambda f: _div(f.get("project.enqueue_rps"), f.get("baseline.enqueue_rps")),
        lambda v: v >= 2.5,
        f"≥ 2.5{TIMES}",
    ),
    Target(
        "Enqueue within 1.3 times the floor (floor ÷ project)",
        lambda f: _div(f.get("floor.enqueue_rps"), f.get("project.enqueue_rps")),
        lambda v: v <= 1.3,
        f"≤ 1.3{TIMES}",
    ),
    Target(
        "Enqueue p99 at 64 connections",
        lambda f: f.get("project.enqueue_p99_ms"),
        lambda v: v <= 100,
        "≤ 100 ms",
    ),
    Target(
        "/healthz p99 under that load",
        lambda f: f.get("project.healthz_p99_ms"),
        lambda v: v <= 20,
        "≤ 20 ms",
    ),
    Target(
        "Status reads ≥ 2 times the baseline",
        lambda f: _div(f.get("project.status_rps"), f.get("baseline.status_rps")),
        lambda v: v >= 2,
        f"≥ 2{TIMES}",
    ),
    Target(
        "Real-SMTP mails/s per process ≥ 60% of baseline no-op tasks/s per process",
        lambda f: _div(
            f.get("project.drain_1x1_per_s_per_process"), f.get("baseline.noop_drain_per_s")
        ),
        lambda v: v >= 0.6,
        "≥ 0.60",
    ),
    Target(
        "2 nodes ≥ 1.6 times one node",
        lambda f: _div(f.get("project.drain_2x1_per_s"), f.get("project.drain_1x1_per_s")),
        lambda v: v >= 1.6,
        f"≥ 1.6{TIMES}",
    ),
    Target(
        "End to end p50, POST to SUCCESS, low load",
        lambda f: f.get("project.e2e_p50_ms"),
        lambda v: v <= 10,
        "≤ 10 ms",
    ),
]


def _max(*values: float | None) -> float | None:
    known = [value for value in values if value is not None]
    return max(known) if len(known) == len(values) else None


RELAY_TARGETS = [
    Target(
        "Shipped default, relay 50 ms away ÷ relay on localhost (mails/s)",
        lambda f: f.get("relay.rtt50_over_rtt0"),
        lambda v: v >= 0.8,
        "≥ 0.80",
        TIMES,
    ),
    Target(
        "The node's RSS (main + pool, summed) during those drains, the larger",
        lambda f: _max(f.get("relay.rss_rtt0_peak_mb"), f.get("relay.rss_rtt50_peak_mb")),
        lambda v: v <= 250,
        "≤ 250 MB",
        "MB",
    ),
    Target(
        "SMTP_RATE_LIMIT=20, 3 nodes: mean rate, first to last mail",
        lambda f: f.get("relay.rate_limit_per_s"),
        lambda v: 18 <= v <= 22,
        "18 to 22 mails/s",
        "mails/s",
    ),
    Target(
        "SMTP_RATE_LIMIT=20, 3 nodes: most mails in any one second (sliding window)",
        lambda f: f.get("relay.rate_limit_max_1s"),
        lambda v: v <= 30,
        "≤ 30",
        COUNT,
    ),
]


def verdicts(fig: Figures, targets: list[Target] = TARGETS) -> list[dict[str, Any]]:
    out = []
    for target in targets:
        value = target.measured(fig)
        out.append(
            {
                "target": target.name,
                "goal": target.goal,
                "measured": value,
                "holds": None if value is None else bool(target.holds(value)),
                **({"unit": target.unit} if target.unit is not None else {}),
            }
        )
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == TIMES:
        return f"{value:.2f}{TIMES}"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


# (label, unit, project key, baseline key, floor key)
_ROWS: list[tuple[str, str, str | None, str | None, str | None]] = [
    (
        "Enqueue, 64 connections",
        "req/s",
        "project.enqueue_rps",
        "baseline.enqueue_rps",
        "floor.enqueue_rps",
    ),
    (
        "Enqueue p50",
        "ms",
        "project.enqueue_p50_ms",
        "baseline.enqueue_p50_ms",
        "floor.constant_p50_ms",
    ),
    (
        "Enqueue p99",
        "ms",
        "project.enqueue_p99_ms",
        "baseline.enqueue_p99_ms",
        "floor.constant_p99_ms",
    ),
    (
        "/healthz p99 during enqueue load",
        "ms",
        "project.healthz_p99_ms",
        "baseline.healthz_p99_ms",
        "floor.constant_healthz_p99_ms",
    ),
    (
        "API CPU per enqueue",
        "µs",
        "project.enqueue_cpu_us_per_request",
        "baseline.enqueue_cpu_us_per_request",
        "floor.enqueue_cpu_us_per_request",
    ),
    (
        "Redis CPU per enqueue",
        "µs",
        "project.enqueue_redis_cpu_us_per_request",
        "baseline.enqueue_redis_cpu_us_per_request",
        None,
    ),
    (
        "Redis commands per enqueue",
        "",
        "project.enqueue_redis_commands_per_request",
        "baseline.enqueue_redis_commands_per_request",
        None,
    ),
    (
        "Status reads, 64 connections",
        "req/s",
        "project.status_rps",
        "baseline.status_rps",
        "floor.constant_rps",
    ),
    (
        "Status p99",
        "ms",
        "project.status_p99_ms",
        "baseline.status_p99_ms",
        "floor.constant_p99_ms",
    ),
    (
        "API CPU per status read",
        "µs",
        "project.status_cpu_us_per_request",
        "baseline.status_cpu_us_per_request",
        "floor.constant_cpu_us_per_request",
    ),
    (
        "Drain, 1 node, 1 process",
        "tasks/s",
        "project.drain_1x1_per_s",
        "baseline.noop_drain_per_s",
        None,
    ),
    ("Drain, 2 nodes, 1 process each", "tasks/s", "project.drain_2x1_per_s", None, None),
    ("Drain, 1 node, 2 processes", "tasks/s", "project.drain_1x2_per_s", None, None),
    (
        "Cores kept busy, 1 node, 1 process (workers, Redis, SMTP server)",
        "",
        "project.drain_1x1_cores",
        "baseline.noop_cores",
        None,
    ),
    ("Cores kept busy, 2 nodes, 1 process each", "", "project.drain_2x1_cores", None, None),
    ("Cores kept busy, 1 node, 2 processes", "", "project.drain_1x2_cores", None, None),
    (
        "Worker CPU per task (1 node, 1 process)",
        "µs",
        "project.drain_1x1_cpu_us_per_task",
        "baseline.noop_cpu_us_per_task",
        None,
    ),
    (
        "SMTP server CPU per mail (1 node, 1 process)",
        "µs",
        "project.drain_1x1_smtp_cpu_us_per_task",
        None,
        None,
    ),
    (
        "Drain, 1 node, 1 process, through aiosmtpd",
        "tasks/s",
        "project.drain_1x1_aiosmtpd_per_s",
        "baseline.noop_drain_per_s",
        None,
    ),
    (
        "aiosmtpd's CPU per mail (that drain)",
        "µs",
        "project.drain_1x1_aiosmtpd_smtp_cpu_us_per_task",
        None,
        None,
    ),
    (
        "Redis CPU per task (1 node, 1 process)",
        "µs",
        "project.drain_1x1_redis_cpu_us_per_task",
        "baseline.noop_redis_cpu_us_per_task",
        None,
    ),
    (
        "Redis commands per task (1 node, 1 process)",
        "",
        "project.drain_1x1_redis_commands_per_task",
        "baseline.noop_redis_commands_per_task",
        None,
    ),
    (
        "End to end p50 (POST → SUCCESS stored)",
        "ms",
        "project.e2e_p50_ms",
        "baseline.e2e_p50_ms",
        None,
    ),
    ("End to end p99", "ms", "project.e2e_p99_ms", "baseline.e2e_p99_ms", None),
    ("p50 of which: POST → submission recorded", "ms", "project.e2e_accept_p50_ms", None, None),
    ("p50 of which: recorded → worker starts it", "ms", "project.e2e_queue_p50_ms", None, None),
    ("p50 of which: started → SMTP accepted", "ms", "project.e2e_send_p50_ms", None, None),
    ("p50 of which: SMTP accepted → SUCCESS stored", "ms", "project.e2e_finish_p50_ms", None, None),
    (
        "End to end p50, seen by polling status",
        "ms",
        "project.e2e_observed_p50_ms",
        "baseline.e2e_observed_p50_ms",
        None,
    ),
]

_FLOOR_ROWS = [
    ("Constant JSON endpoint, 64 connections", "req/s", "floor.constant_rps"),
    ("Constant endpoint, server CPU per request", "µs", "floor.constant_cpu_us_per_request"),
    ("Bare send_task (no result backend), CPU per call", "µs", "floor.send_task_cpu_us"),
    ("Bare send_task loop, one thread", "calls/s", "floor.send_task_per_s"),
    (
        "send_task with the Redis result backend, CPU per call",
        "µs",
        "floor.send_task_with_backend_cpu_us",
    ),
    (
        "send_task as the API calls it (into its channel's outbox, no I/O), CPU per call",
        "µs",
        "project.send_task_cpu_us",
    ),
    (
        "The API's whole publish per submission (message, record, write), alone, CPU",
        "µs",
        "project.publish_alone_cpu_us",
    ),
    (
        "The same per submission in batches of 16 (group commit, as under load), CPU",
        "µs",
        "project.publish_batched_cpu_us",
    ),
    ("Redis LPUSH, redis-py loop", "calls/s", "floor.lpush_per_s"),
    ("Redis LPUSH, client CPU per call", "µs", "floor.lpush_cpu_us"),
    ("Enqueue floor: 1 / (1/constant req/s + send_task CPU)", "req/s", "floor.enqueue_rps"),
]


def _get(fig: Figures, key: str | None) -> float | None:
    return fig.get(key) if key else None


# (label, unit, key)
# (label, unit, key)
_RELAY_ROWS = [
    ("Drain, 1 node, relay on localhost (RTT 0)", "mails/s", "relay.drain_rtt0_per_s"),
    ("Drain, 1 node, relay 50 ms away (latency proxy)", "mails/s", "relay.drain_rtt50_per_s"),
    ("RTT 50 ms ÷ RTT 0", TIMES, "relay.rtt50_over_rtt0"),
    ("Node's peak RSS (main + pool, summed), RTT 0", "MB", "relay.rss_rtt0_peak_mb"),
    ("Node's peak RSS (main + pool, summed), RTT 50 ms", "MB", "relay.rss_rtt50_peak_mb"),
    ("Node's peak PSS (shared pages split), RTT 0", "MB", "relay.pss_rtt0_peak_mb"),
    ("Node's peak PSS (shared pages split), RTT 50 ms", "MB", "relay.pss_rtt50_peak_mb"),
    ("Node's processes (main + pool)", COUNT, "relay.node_processes"),
    ("SMTP_RATE_LIMIT=20, 3 nodes: first to last mail", "mails/s", "relay.rate_limit_per_s"),
    ("Most mails in any one second (sliding window)", COUNT, "relay.rate_limit_max_1s"),
    ("Most mails in any calendar second", COUNT, "relay.rate_limit_max_calendar_s"),
    ("Peak RSS of the 3 nodes, summed", "MB", "relay.rate_limit_rss_peak_mb"),
]


def _fmt_relay(value: float | None, unit: str) -> str:
    if unit == COUNT:
        return "—" if value is None else f"{value:,.0f}"
    return _fmt(value, unit)


def _relay_markdown(result: dict[str, Any]) -> list[str]:
    """The relay rounds (issue #15): the shipped worker command, its figures and targets."""
    fig: Figures = result["figures"]
    lines = ["", "| Relay (shipped worker command, one run) | Value |", "| --- | ---: |"]
    for label, unit, key in _RELAY_ROWS:
        lines.append(f"| {label} | {_fmt_relay(fig.get(key), unit)} |")
    lines += ["", "| Relay target | Goal | Measured | Holds |", "| --- | --- | ---: | :---: |"]
    for v in result["relay_targets"]:
        holds = "—" if v["holds"] is None else ("yes" if v["holds"] else "**no**")
        measured = _fmt_relay(v["measured"], v.get("unit", ""))
        lines.append(f"| {v['target']} | {v['goal']} | {measured} | {holds} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    fig: Figures = result["figures"]
    meta = result["meta"]
    rounds = meta["params"].get("rounds", 1)
    head = (
        f"Run {meta['finished_at']} ({meta['mode']}), {meta['machine']['nproc']} CPUs "
        f"({meta['machine']['cpu_model']}), Python {meta['machine']['python']}, "
        f"{meta['tools']['k6']}, Redis {meta['tools']['redis']}."
    )
    if meta.get("only", "all") != "all":  # the relay rounds alone
        lines = [head, "Only the relay rounds (--only relay).", *_relay_markdown(result)]
        notes = meta.get("notes") or []
        if notes:
            lines += ["", *[f"- {note}" for note in notes]]
        return "\n".join(lines) + "\n"
    lines = [
        head,
        *(
            [f"Each figure is the best of {rounds} rounds of the whole sequence (meta.rounds)."]
            if rounds > 1
            else []
        ),
        "",
        "| Figure | Project | Baseline | Floor | Project ÷ baseline | Project ÷ floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, unit, pk, bk, fk in _ROWS:
        p, b, f = _get(fig, pk), _get(fig, bk), _get(fig, fk)
        lines.append(
            f"| {label} | {_fmt(p, unit)} | {_fmt(b, unit)} | {_fmt(f, unit)} "
            f"| {_fmt(_div(p, b), TIMES)} | {_fmt(_div(p, f), TIMES)} |"
        )
    lines += ["", "| Floor | Value |", "| --- | ---: |"]
    for label, unit, key in _FLOOR_ROWS:
        lines.append(f"| {label} | {_fmt(fig.get(key), unit)} |")
    lines += ["", "| Target | Goal | Measured | Holds |", "| --- | --- | ---: | :---: |"]
    for v in result["targets"]:
        unit = "ms" if "ms" in v["goal"] else TIMES
        holds = "—" if v["holds"] is None else ("yes" if v["holds"] else "**no**")
        lines.append(f"| {v['target']} | {v['goal']} | {_fmt(v['measured'], unit)} | {holds} |")
    per_round = result.get("targets_per_round") or []
    if len(per_round) > 1:
        # The best rounds of the two sides may come from different rounds; each round's
        # own ratios show how far the machine moved under them.
        heads = " | ".join(f"round {n}" for n in range(1, len(per_round) + 1))
        lines += [
            "",
            f"| Target, each round on its own | Goal | {heads} |",
            "| --- | --- |" + " ---: |" * len(per_round),
        ]
        for i, v in enumerate(result["targets"]):
            unit = "ms" if "ms" in v["goal"] else TIMES
            cells = " | ".join(_fmt(round_[i]["measured"], unit) for round_ in per_round)
            lines.append(f"| {v['target']} | {v['goal']} | {cells} |")
    lines += ["", "| Ratio | Value |", "| --- | ---: |"]
    for name, value in result["ratios"].items():
        lines.append(f"| {name} | {_fmt(value, TIMES)} |")
    if "relay_targets" in result:
        lines += _relay_markdown(result)
    notes = meta.get("notes") or []
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig: Figures = result["figures"]

    def val(key: str) -> float:
        value = fig.get(key)
        return float(value) if value is not None else 0.0

    colors = {"project": "#1f77b4", "baseline": "#ff7f0e", "floor": "#7f7f7f"}
    figure, axes = plt.subplots(2, 3, figsize=(16, 9))
    figure.suptitle(
        f"make bench — {result['meta']['mode']} run, {result['meta']['finished_at']}, "
        f"{result['meta']['machine']['nproc']} CPUs",
        fontsize=13,
    )

    def bars(ax: Any, title: str, unit: str, items: list[tuple[str, float, str]]) -> None:
        labels = [label for label, _, _ in items]
        values = [value for _, value, _ in items]
        drawn = ax.bar(labels, values, color=[colors[kind] for _, _, kind in items])
        ax.bar_label(drawn, fmt="%.0f" if max(values, default=0) >= 100 else "%.1f", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelsize=8, rotation=20)

    bars(
        axes[0][0],
        "Enqueue, 64 connections",
        "req/s",
        [
            ("baseline", val("baseline.enqueue_rps"), "baseline"),
            ("project", val("project.enqueue_rps"), "project"),
            ("floor", val("floor.enqueue_rps"), "floor"),
            ("constant\nendpoint", val("floor.constant_rps"), "floor"),
        ],
    )
    ax = axes[0][1]
    latency_keys = {
        "baseline": (
            "baseline.enqueue_p50_ms",
            "baseline.enqueue_p99_ms",
            "baseline.healthz_p99_ms",
        ),
        "project": ("project.enqueue_p50_ms", "project.enqueue_p99_ms", "project.healthz_p99_ms"),
        "constant": (
            "floor.constant_p50_ms",
            "floor.constant_p99_ms",
            "floor.constant_healthz_p99_ms",
        ),
    }
    xs = range(len(latency_keys))
    width = 0.27
    for i, stat in enumerate(("p50", "p99", "/healthz p99")):
        values = [val(keys[i]) for keys in latency_keys.values()]
        drawn = ax.bar([x + (i - 1) * width for x in xs], values, width, label=stat)
        ax.bar_label(drawn, fmt="%.0f", fontsize=7)
    ax.axhline(100, color="red", linestyle="--", linewidth=0.8)
    ax.axhline(20, color="green", linestyle=":", linewidth=0.8)
    ax.set_xticks(list(xs), list(latency_keys), fontsize=8)
    ax.set_title("Latency under enqueue load (targets: p99 100 ms, /healthz 20 ms)", fontsize=10)
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    bars(
        axes[0][2],
        "Status reads, 64 connections",
        "req/s",
        [
            ("baseline", val("baseline.status_rps"), "baseline"),
            ("project", val("project.status_rps"), "project"),
            ("constant\nendpoint", val("floor.constant_rps"), "floor"),
        ],
    )
    bars(
        axes[1][0],
        "Drain: tasks/s (real SMTP; baseline: no-op)",
        "tasks/s",
        [
            ("baseline no-op\n1 node, 1 proc", val("baseline.noop_drain_per_s"), "baseline"),
            ("project\n1 node, 1 proc", val("project.drain_1x1_per_s"), "project"),
            ("project\n2 nodes, 1 proc", val("project.drain_2x1_per_s"), "project"),
            ("project\n1 node, 2 procs", val("project.drain_1x2_per_s"), "project"),
        ],
    )
    ax = axes[1][1]
    for i, (stat, key) in enumerate((("p50", "e2e_p50_ms"), ("p99", "e2e_p99_ms"))):
        values = [val(f"baseline.{key}"), val(f"project.{key}")]
        drawn = ax.bar([x + (i - 0.5) * 0.4 for x in range(2)], values, 0.4, label=stat)
        ax.bar_label(drawn, fmt="%.1f", fontsize=8)
    ax.axhline(10, color="red", linestyle="--", linewidth=0.8)
    ax.set_xticks([0, 1], ["baseline (no-op)", "project (SMTP)"], fontsize=8)
    ax.set_title("End to end, POST → SUCCESS, low load (target p50 10 ms)", fontsize=10)
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    bars(
        axes[1][2],
        "CPU µs per request / task",
        "µs",
        [
            ("send_task\nfloor", val("floor.send_task_cpu_us"), "floor"),
            ("constant\nendpoint", val("floor.constant_cpu_us_per_request"), "floor"),
            ("baseline\nenqueue", val("baseline.enqueue_cpu_us_per_request"), "baseline"),
            ("project\nenqueue", val("project.enqueue_cpu_us_per_request"), "project"),
            ("baseline\nstatus", val("baseline.status_cpu_us_per_request"), "baseline"),
            ("project\nstatus", val("project.status_cpu_us_per_request"), "project"),
            ("baseline\nno-op task", val("baseline.noop_cpu_us_per_task"), "baseline"),
            ("project\nmail", val("project.drain_1x1_cpu_us_per_task"), "project"),
        ],
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
