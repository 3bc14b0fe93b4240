"""Turn the measured figures into ratios, target verdicts, a markdown report and a chart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Figures = dict[str, float | None]
TIMES = "\N{MULTIPLICATION SIGN}"
COUNT = "count"  # a unit: a whole number, shown without decimals


def _keys(prefix: str, names: str) -> list[str]:
    return [prefix + name for name in names.split()]


# Every figure a run reports (the smoke test checks that each one is there).
REQUIRED_FIGURES = [
    # enqueue: POST /send-email from 64 connections
    *_keys("project.", "enqueue_rps enqueue_p50_ms enqueue_p99_ms healthz_p99_ms"),
    *_keys("project.", "enqueue_cpu_us_per_request enqueue_redis_cpu_us_per_request"),
    *_keys("baseline.", "enqueue_rps enqueue_p50_ms enqueue_p99_ms healthz_p99_ms"),
    *_keys("baseline.", "enqueue_cpu_us_per_request enqueue_redis_cpu_us_per_request"),
    *_keys("floor.", "constant_rps constant_p50_ms constant_p99_ms constant_healthz_p99_ms"),
    *_keys("floor.", "constant_cpu_us_per_request"),
    *_keys("floor.", "send_task_cpu_us send_task_per_s send_task_with_backend_cpu_us"),
    *_keys("project.", "send_task_cpu_us publish_alone_cpu_us publish_batched_cpu_us"),
    *_keys("floor.", "lpush_per_s lpush_cpu_us enqueue_rps enqueue_cpu_us_per_request"),
    # status reads: GET /task-status/<id> of finished tasks from 64 connections
    *_keys("project.", "status_rps status_p50_ms status_p99_ms status_cpu_us_per_request"),
    *_keys("baseline.", "status_rps status_p50_ms status_p99_ms status_cpu_us_per_request"),
    # drains: N queued tasks, workers started, time until the last is done
    *_keys("project.drain_", "1x1_per_s 2x1_per_s 1x2_per_s"),
    *_keys("project.drain_", "1x1_per_s_per_process 2x1_per_s_per_process 1x2_per_s_per_process"),
    *_keys("project.drain_", "1x1_cpu_us_per_task 2x1_cpu_us_per_task 1x2_cpu_us_per_task"),
    *_keys("project.drain_", "1x1_redis_cpu_us_per_task 1x1_smtp_cpu_us_per_task"),
    # CPU-seconds per second during each drain (workers, Redis, the SMTP sink): how
    # much of the machine's cores the drain kept busy
    *_keys("project.drain_", "1x1_cores 2x1_cores 1x2_cores"),
    # the same 1 x 1 drain through aiosmtpd, the SMTP server the tests use (smtp_sink)
    *_keys("project.drain_1x1_aiosmtpd_", "per_s cpu_us_per_task smtp_cpu_us_per_task"),
    *_keys("baseline.noop_", "drain_per_s cpu_us_per_task redis_cpu_us_per_task cores"),
    # end to end at low load: POST sent to SUCCESS stored (and seen by polling)
    *_keys("project.e2e_", "p50_ms p99_ms observed_p50_ms observed_p99_ms"),
    *_keys("baseline.e2e_", "p50_ms p99_ms observed_p50_ms observed_p99_ms"),
    # Redis commands per request and per task (what the server did for each)
    "project.enqueue_redis_commands_per_request",
    "baseline.enqueue_redis_commands_per_request",
    "project.drain_1x1_redis_commands_per_task",
    "baseline.noop_redis_commands_per_task",
]

# The relay rounds: the shipped worker command (no --concurrency, no --pool), one node,
# draining to the SMTP sink on loopback and through a latency proxy 50 ms away; then
# three nodes with SMTP_RATE_LIMIT=20 through the proxy. Measured once per run (after
# the rounds), so not part of best_of. RSS and PSS (pages shared after fork split
# between processes): the node's processes summed, at the largest sample.
RELAY_FIGURES = _keys(
    "relay.",
    "drain_rtt0_per_s drain_rtt50_per_s rtt50_over_rtt0 rss_rtt0_peak_mb rss_rtt50_peak_mb "
    "pss_rtt0_peak_mb pss_rtt50_peak_mb node_processes rate_limit_per_s rate_limit_max_1s "
    "rate_limit_max_calendar_s rate_limit_rss_peak_mb",
)


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
    # One request = the constant endpoint's cost as served (1 / its req/s, under the
    # same load generator on the same machine) + the CPU of one bare send_task.
    fig["floor.enqueue_rps"] = 1 / (1 / const_rps + send_s) if const_rps else None
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


_P, _B, _F = "project.", "baseline.", "floor."

# (name, numerator, denominator): every ratio of one run's own figures.
_RATIOS = [
    ("enqueue req/s: project ÷ baseline", _P + "enqueue_rps", _B + "enqueue_rps"),
    ("enqueue req/s: project ÷ floor", _P + "enqueue_rps", _F + "enqueue_rps"),
    ("enqueue req/s: project ÷ constant endpoint", _P + "enqueue_rps", _F + "constant_rps"),
    ("enqueue p99: project ÷ baseline", _P + "enqueue_p99_ms", _B + "enqueue_p99_ms"),
    ("/healthz p99 under load: project ÷ baseline", _P + "healthz_p99_ms", _B + "healthz_p99_ms"),
    (
        "enqueue CPU/request: project ÷ baseline",
        _P + "enqueue_cpu_us_per_request",
        _B + "enqueue_cpu_us_per_request",
    ),
    (
        "enqueue CPU/request: project ÷ floor",
        _P + "enqueue_cpu_us_per_request",
        _F + "enqueue_cpu_us_per_request",
    ),
    ("status req/s: project ÷ baseline", _P + "status_rps", _B + "status_rps"),
    ("status req/s: project ÷ constant endpoint", _P + "status_rps", _F + "constant_rps"),
    (
        "status CPU/request: project ÷ baseline",
        _P + "status_cpu_us_per_request",
        _B + "status_cpu_us_per_request",
    ),
    (
        "mails/s per process (1 node, 1 process) ÷ baseline no-op tasks/s per process",
        _P + "drain_1x1_per_s_per_process",
        _B + "noop_drain_per_s",
    ),
    (
        "the same, through aiosmtpd ÷ baseline no-op tasks/s per process",
        _P + "drain_1x1_aiosmtpd_per_s",
        _B + "noop_drain_per_s",
    ),
    ("drain: 2 nodes ÷ 1 node (1 process each)", _P + "drain_2x1_per_s", _P + "drain_1x1_per_s"),
    ("drain per busy core: 2 nodes ÷ 1 node", _P + "drain_2x1_per_core", _P + "drain_1x1_per_core"),
    ("drain: 2 processes ÷ 1 process (1 node)", _P + "drain_1x2_per_s", _P + "drain_1x1_per_s"),
    (
        "CPU per task: real mail ÷ baseline no-op",
        _P + "drain_1x1_cpu_us_per_task",
        _B + "noop_cpu_us_per_task",
    ),
    ("end to end p50: project ÷ baseline", _P + "e2e_p50_ms", _B + "e2e_p50_ms"),
]


def ratios(fig: Figures) -> dict[str, float | None]:
    return {name: _div(fig.get(num), fig.get(den)) for name, num, den in _RATIOS}


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: Callable[[Figures], float | None]
    holds: Callable[[float], bool]
    unit: str = TIMES  # of the measured value


def _ratio(num: str, den: str) -> Callable[[Figures], float | None]:
    return lambda fig: _div(fig.get(num), fig.get(den))


def _figure(key: str) -> Callable[[Figures], float | None]:
    return lambda fig: fig.get(key)


def _larger(*keys: str) -> Callable[[Figures], float | None]:
    """The largest of the figures, None unless every one was measured."""

    def measured(fig: Figures) -> float | None:
        values = [fig.get(key) for key in keys]
        known = [value for value in values if value is not None]
        return max(known) if len(known) == len(values) else None

    return measured


TARGETS = [
    Target(
        "Enqueue ≥ 2.5 times the baseline",
        f"≥ 2.5{TIMES}",
        _ratio(_P + "enqueue_rps", _B + "enqueue_rps"),
        lambda v: v >= 2.5,
    ),
    Target(
        "Enqueue within 1.3 times the floor (floor ÷ project)",
        f"≤ 1.3{TIMES}",
        _ratio(_F + "enqueue_rps", _P + "enqueue_rps"),
        lambda v: v <= 1.3,
    ),
    Target(
        "Enqueue p99 at 64 connections",
        "≤ 100 ms",
        _figure(_P + "enqueue_p99_ms"),
        lambda v: v <= 100,
        "ms",
    ),
    Target(
        "/healthz p99 under that load",
        "≤ 20 ms",
        _figure(_P + "healthz_p99_ms"),
        lambda v: v <= 20,
        "ms",
    ),
    Target(
        "Status reads ≥ 2 times the baseline",
        f"≥ 2{TIMES}",
        _ratio(_P + "status_rps", _B + "status_rps"),
        lambda v: v >= 2,
    ),
    Target(
        "Real-SMTP mails/s per process ≥ 60% of baseline no-op tasks/s per process",
        "≥ 0.60",
        _ratio(_P + "drain_1x1_per_s_per_process", _B + "noop_drain_per_s"),
        lambda v: v >= 0.6,
    ),
    Target(
        "2 nodes ≥ 1.6 times one node",
        f"≥ 1.6{TIMES}",
        _ratio(_P + "drain_2x1_per_s", _P + "drain_1x1_per_s"),
        lambda v: v >= 1.6,
    ),
    Target(
        "Batches of 500 ≥ 10 times single submissions, mails accepted a second",
        f"≥ 10{TIMES}",
        _ratio(_P + "batch_mails_per_s", _P + "batch_single_mails_per_s"),
        lambda v: v >= 10,
    ),
    Target(
        "End to end p50, POST to SUCCESS, low load",
        "≤ 10 ms",
        _figure(_P + "e2e_p50_ms"),
        lambda v: v <= 10,
        "ms",
    ),
]

RELAY_TARGETS = [
    Target(
        "Shipped default, relay 50 ms away ÷ relay on localhost (mails/s)",
        "≥ 0.80",
        _figure("relay.rtt50_over_rtt0"),
        lambda v: v >= 0.8,
    ),
    Target(
        "The node's RSS (main + pool, summed) during those drains, the larger",
        "≤ 250 MB",
        _larger("relay.rss_rtt0_peak_mb", "relay.rss_rtt50_peak_mb"),
        lambda v: v <= 250,
        "MB",
    ),
    Target(
        "SMTP_RATE_LIMIT=20, 3 nodes: mean rate, first to last mail",
        "18 to 22 mails/s",
        _figure("relay.rate_limit_per_s"),
        lambda v: 18 <= v <= 22,
        "mails/s",
    ),
    Target(
        "SMTP_RATE_LIMIT=20, 3 nodes: most mails in any one second (sliding window)",
        "≤ 30",
        _figure("relay.rate_limit_max_1s"),
        lambda v: v <= 30,
        COUNT,
    ),
]


def verdicts(fig: Figures, targets: list[Target] = TARGETS) -> list[dict[str, Any]]:
    out = []
    for target in targets:
        value = target.measured(fig)
        holds = None if value is None else bool(target.holds(value))
        out.append(
            {
                "target": target.name,
                "goal": target.goal,
                "measured": value,
                "holds": holds,
                "unit": target.unit,
            }
        )
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == TIMES:
        return f"{value:.2f}{TIMES}"
    if unit == COUNT or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text if unit == COUNT else f"{text} {unit}".rstrip()


# (label, unit, the project's figure, the baseline's, the floor's)
_ROWS: list[tuple[str, str, str, str | None, str | None]] = [
    ("Enqueue, 64 connections", "req/s", "enqueue_rps", "enqueue_rps", "enqueue_rps"),
    ("Enqueue p50", "ms", "enqueue_p50_ms", "enqueue_p50_ms", "constant_p50_ms"),
    ("Enqueue p99", "ms", "enqueue_p99_ms", "enqueue_p99_ms", "constant_p99_ms"),
    (
        "/healthz p99 during enqueue load",
        "ms",
        "healthz_p99_ms",
        "healthz_p99_ms",
        "constant_healthz_p99_ms",
    ),
    (
        "API CPU per enqueue",
        "µs",
        "enqueue_cpu_us_per_request",
        "enqueue_cpu_us_per_request",
        "enqueue_cpu_us_per_request",
    ),
    (
        "Redis CPU per enqueue",
        "µs",
        "enqueue_redis_cpu_us_per_request",
        "enqueue_redis_cpu_us_per_request",
        None,
    ),
    (
        "Redis commands per enqueue",
        "",
        "enqueue_redis_commands_per_request",
        "enqueue_redis_commands_per_request",
        None,
    ),
    ("Status reads, 64 connections", "req/s", "status_rps", "status_rps", "constant_rps"),
    ("Status p99", "ms", "status_p99_ms", "status_p99_ms", "constant_p99_ms"),
    (
        "API CPU per status read",
        "µs",
        "status_cpu_us_per_request",
        "status_cpu_us_per_request",
        "constant_cpu_us_per_request",
    ),
    ("Drain, 1 node, 1 process", "tasks/s", "drain_1x1_per_s", "noop_drain_per_s", None),
    ("Drain, 2 nodes, 1 process each", "tasks/s", "drain_2x1_per_s", None, None),
    ("Drain, 1 node, 2 processes", "tasks/s", "drain_1x2_per_s", None, None),
    (
        "Cores kept busy, 1 node, 1 process (workers, Redis, SMTP server)",
        "",
        "drain_1x1_cores",
        "noop_cores",
        None,
    ),
    ("Cores kept busy, 2 nodes, 1 process each", "", "drain_2x1_cores", None, None),
    ("Cores kept busy, 1 node, 2 processes", "", "drain_1x2_cores", None, None),
    (
        "Worker CPU per task (1 node, 1 process)",
        "µs",
        "drain_1x1_cpu_us_per_task",
        "noop_cpu_us_per_task",
        None,
    ),
    (
        "SMTP server CPU per mail (1 node, 1 process)",
        "µs",
        "drain_1x1_smtp_cpu_us_per_task",
        None,
        None,
    ),
    (
        "Drain, 1 node, 1 process, through aiosmtpd",
        "tasks/s",
        "drain_1x1_aiosmtpd_per_s",
        "noop_drain_per_s",
        None,
    ),
    (
        "aiosmtpd's CPU per mail (that drain)",
        "µs",
        "drain_1x1_aiosmtpd_smtp_cpu_us_per_task",
        None,
        None,
    ),
    (
        "Redis CPU per task (1 node, 1 process)",
        "µs",
        "drain_1x1_redis_cpu_us_per_task",
        "noop_redis_cpu_us_per_task",
        None,
    ),
    (
        "Redis commands per task (1 node, 1 process)",
        "",
        "drain_1x1_redis_commands_per_task",
        "noop_redis_commands_per_task",
        None,
    ),
    ("End to end p50 (POST → SUCCESS stored)", "ms", "e2e_p50_ms", "e2e_p50_ms", None),
    ("End to end p99", "ms", "e2e_p99_ms", "e2e_p99_ms", None),
    ("p50 of which: POST → submission recorded", "ms", "e2e_accept_p50_ms", None, None),
    ("p50 of which: recorded → worker starts it", "ms", "e2e_queue_p50_ms", None, None),
    ("p50 of which: started → SMTP accepted", "ms", "e2e_send_p50_ms", None, None),
    ("p50 of which: SMTP accepted → SUCCESS stored", "ms", "e2e_finish_p50_ms", None, None),
    (
        "End to end p50, seen by polling status",
        "ms",
        "e2e_observed_p50_ms",
        "e2e_observed_p50_ms",
        None,
    ),
]

# (label, unit, figure)
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


def _values(title: str, rows: list[tuple[str, str, str]], fig: Figures) -> list[str]:
    lines = ["", f"| {title} | Value |", "| --- | ---: |"]
    return lines + [f"| {label} | {_fmt(fig.get(key), unit)} |" for label, unit, key in rows]


def _verdicts(title: str, found: list[dict[str, Any]]) -> list[str]:
    lines = ["", f"| {title} | Goal | Measured | Holds |", "| --- | --- | ---: | :---: |"]
    for v in found:
        holds = "—" if v["holds"] is None else ("yes" if v["holds"] else "**no**")
        measured = _fmt(v["measured"], v["unit"])
        lines.append(f"| {v['target']} | {v['goal']} | {measured} | {holds} |")
    return lines


def _figures_table(fig: Figures) -> list[str]:
    lines = [
        "",
        "| Figure | Project | Baseline | Floor | Project ÷ baseline | Project ÷ floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, unit, project, baseline, floor in _ROWS:
        p = fig.get(_P + project)
        b = fig.get(_B + baseline) if baseline else None
        f = fig.get(_F + floor) if floor else None
        cells = [_fmt(p, unit), _fmt(b, unit), _fmt(f, unit)]
        cells += [_fmt(_div(p, b), TIMES), _fmt(_div(p, f), TIMES)]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def _per_round(result: dict[str, Any]) -> list[str]:
    """Each target in each round: the best rounds of the two sides of a ratio may come
    from different rounds, and these show how far the machine moved under them."""
    per_round = result.get("targets_per_round") or []
    if len(per_round) < 2:
        return []
    heads = " | ".join(f"round {n}" for n in range(1, len(per_round) + 1))
    lines = [
        "",
        f"| Target, each round on its own | Goal | {heads} |",
        "| --- | --- |" + " ---: |" * len(per_round),
    ]
    for i, v in enumerate(result["targets"]):
        cells = " | ".join(_fmt(round_[i]["measured"], v["unit"]) for round_ in per_round)
        lines.append(f"| {v['target']} | {v['goal']} | {cells} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    fig: Figures = result["figures"]
    meta = result["meta"]
    machine = meta["machine"]
    lines = [
        f"Run {meta['finished_at']} ({meta['mode']}), {machine['nproc']} CPUs "
        f"({machine['cpu_model']}), Python {machine['python']}, "
        f"{meta['tools']['k6']}, Redis {meta['tools']['redis']}."
    ]
    if meta.get("only", "all") == "all":
        rounds = meta["params"].get("rounds", 1)
        if rounds > 1:
            lines.append(
                f"Each figure is the best of {rounds} rounds of the whole sequence (meta.rounds)."
            )
        lines += _figures_table(fig)
        lines += _values("Floor", _FLOOR_ROWS, fig)
        lines += _verdicts("Target", result["targets"])
        lines += _per_round(result)
        lines += ["", "| Ratio | Value |", "| --- | ---: |"]
        lines += [f"| {name} | {_fmt(v, TIMES)} |" for name, v in result["ratios"].items()]
    else:
        lines.append("Only the relay rounds (--only relay).")
    if "relay_targets" in result:
        lines += _values("Relay (shipped worker command, one run)", _RELAY_ROWS, fig)
        lines += _verdicts("Relay target", result["relay_targets"])
    notes = meta.get("notes") or []
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


# The chart: a panel per comparison, a bar per figure, labelled with its key in
# latest.json (matplotlib's defaults otherwise).
_PANELS = [
    (
        "Enqueue at 64 connections, req/s",
        "baseline.enqueue_rps project.enqueue_rps floor.enqueue_rps floor.constant_rps",
    ),
    (
        "p99 under the enqueue load, ms",
        "baseline.enqueue_p99_ms project.enqueue_p99_ms floor.constant_p99_ms "
        "baseline.healthz_p99_ms project.healthz_p99_ms",
    ),
    (
        "Status reads at 64 connections, req/s",
        "baseline.status_rps project.status_rps floor.constant_rps",
    ),
    (
        "Drain, tasks/s (project: real SMTP; baseline: no-op)",
        "baseline.noop_drain_per_s project.drain_1x1_per_s project.drain_2x1_per_s "
        "project.drain_1x2_per_s",
    ),
    (
        "End to end, POST to SUCCESS at low load, ms",
        "baseline.e2e_p50_ms project.e2e_p50_ms baseline.e2e_p99_ms project.e2e_p99_ms",
    ),
    (
        "CPU per request or task, µs",
        "floor.send_task_cpu_us floor.constant_cpu_us_per_request "
        "baseline.enqueue_cpu_us_per_request project.enqueue_cpu_us_per_request "
        "baseline.status_cpu_us_per_request project.status_cpu_us_per_request "
        "baseline.noop_cpu_us_per_task project.drain_1x1_cpu_us_per_task",
    ),
]


def chart(result: dict[str, Any], path: Path) -> None:
    # A Figure without pyplot: no GUI backend, no global state (matplotlib's way for
    # scripts and servers).
    from matplotlib.figure import Figure

    fig: Figures = result["figures"]
    meta = result["meta"]
    figure = Figure(figsize=(16, 9), layout="constrained")
    figure.suptitle(
        f"make bench: {meta['mode']} run, {meta['finished_at']}, {meta['machine']['nproc']} CPUs"
    )
    for ax, (title, keys) in zip(figure.subplots(2, 3).flat, _PANELS, strict=True):
        bars = keys.split()
        ax.bar_label(ax.barh(bars, [fig.get(key) or 0.0 for key in bars]), fmt=_fmt)
        ax.invert_yaxis()  # the first bar on top
        ax.margins(x=0.15)  # room for the labels
        ax.set_title(title)
    figure.savefig(path)
