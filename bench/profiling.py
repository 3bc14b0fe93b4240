"""pyinstrument helpers for ``python -m bench.profile``: CPU-time profiles per thread,
combined, and summarised by where the time goes (package of each sampled frame).

pyinstrument samples one thread per profiler. The helpers here time samples with the
thread's CPU clock (``time.thread_time``), not the wall clock, so that time a thread
spends waiting (for the GIL, for Redis, for a socket) is not counted as work.
"""

from __future__ import annotations

import sysconfig
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session
from pyinstrument.stack_sampler import get_stack_sampler

ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]
INTERVAL = 0.0002


def start_cpu_profiler(interval: float = INTERVAL) -> Profiler:
    """A profiler of the calling thread, sampling every ``interval`` of its CPU time."""
    get_stack_sampler().timer_func = time.thread_time
    profiler = Profiler(interval=interval, async_mode="disabled")
    profiler.start()
    return profiler


def combine(sessions: Iterable[Session]) -> Session | None:
    """One session from many (pairwise, so that thousands stay cheap)."""
    level = [s for s in sessions if s is not None]
    if not level:
        return None
    while len(level) > 1:
        paired = [Session.combine(a, b) for a, b in zip(level[::2], level[1::2], strict=False)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _parts(frame_id: str) -> tuple[str, str, str]:
    """(function, file path, line of definition) of a pyinstrument frame identifier
    (``function\\x00path\\x00line`` with ``\\x01``-separated attributes)."""
    parts = frame_id.split("\x01", 1)[0].split("\x00")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def short_path(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if path.startswith(str(ROOT)):
        return str(Path(path).relative_to(ROOT))
    if path.startswith(STDLIB):
        return "stdlib/" + str(Path(path).relative_to(STDLIB))
    return path


def package_of(path: str) -> str:
    """``kombu``, ``stdlib:logging``, ``project:api_service``, … for a file path."""
    if "site-packages/" in path:
        top = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return top.removesuffix(".py")
    if path.startswith(str(ROOT)):
        rel = Path(path).relative_to(ROOT).parts
        # <service>/src/<package>/module.py: the package
        return f"project:{rel[2] if len(rel) > 2 and rel[1] == 'src' else rel[0]}"
    if path.startswith(STDLIB):
        rest = Path(path).relative_to(STDLIB).parts
        return f"stdlib:{rest[0].removesuffix('.py')}" if rest else "stdlib"
    return path or "?"


def _frames(stack: Iterable[str]) -> list[tuple[str, str, str]]:
    return [p for p in map(_parts, stack) if p[1] != "<thread>"]


def by_package(session: Session) -> tuple[dict[str, float], dict[str, float], float]:
    """Self time (the package of the innermost Python frame; a built-in counts for its
    caller) and inclusive time (the package anywhere on the stack), and the total."""
    own: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    total = 0.0
    for stack, seconds in session.frame_records:
        frames = [f for f in _frames(stack) if f[1] != "<built-in>"]
        if not frames:
            continue
        total += seconds
        own[package_of(frames[-1][1])] += seconds
        for package in {package_of(path) for _, path, _ in frames}:
            inclusive[package] += seconds
    return dict(own), dict(inclusive), total


def by_function(session: Session) -> tuple[dict[str, float], float]:
    """Self time per innermost function (built-ins named with their caller)."""
    own: dict[str, float] = defaultdict(float)
    total = 0.0
    for stack, seconds in session.frame_records:
        frames = _frames(stack)
        if not frames:
            continue
        total += seconds
        func, path, line = frames[-1]
        if path == "<built-in>" and len(frames) > 1:
            cfunc, cpath, cline = frames[-2]
            label = f"{func} (built-in, in {cfunc} {short_path(cpath)}:{cline})"
        else:
            label = f"{func} {short_path(path)}:{line}"
        own[label] += seconds
    return dict(own), total


def render(session: Session, title: str, per: int | None = None) -> str:
    """A text report: packages by self and inclusive time, the flat list of functions by
    self time, and the call tree (frames under 2% pruned)."""
    own, inclusive, total = by_package(session)
    lines = [f"# {title}", ""]
    lines.append(f"CPU sampled: {total:.3f} s" + (f" over {per} calls" if per else ""))
    if per:
        lines.append(f"CPU per call: {total / per * 1e6:.0f} µs")
    lines += ["", "## By package: self (leaf frame) and inclusive (anywhere on the stack)", ""]
    for package, seconds in sorted(own.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(
            f"{package:40s} self {seconds / total:6.1%}   inclusive "
            f"{inclusive.get(package, 0) / total:6.1%}"
        )
    lines += ["", "## Inclusive only (packages that call into others)", ""]
    for package, seconds in sorted(inclusive.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"{package:40s} {seconds / total:6.1%}")
    tree = ConsoleRenderer(
        time="percent_of_total",
        processor_options={"filter_threshold": 0.02, "show_regex": ".*", "hide_regex": "$^"},
    )
    functions, _ = by_function(session)
    lines += ["", "## Functions by self time", ""]
    for label, seconds in sorted(functions.items(), key=lambda kv: -kv[1])[:40]:
        lines.append(f"{seconds / total:6.1%}  {label}")
    lines += ["", "## Call tree (frames under 2% pruned)", "", tree.render(session)]
    return "\n".join(lines)


def save(session: Session | None, path: Path) -> None:
    if session is not None:
        session.save(str(path))


def load_all(paths: Iterable[Path]) -> Session | None:
    return combine(Session.load(str(p)) for p in paths)


def summary(session: Session, top: int = 8) -> list[dict[str, Any]]:
    own, inclusive, total = by_package(session)
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return [
        {"package": p, "self": s / total, "inclusive": inclusive.get(p, 0) / total}
        for p, s in ranked
    ]
