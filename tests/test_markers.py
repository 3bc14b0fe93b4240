"""Every test module that starts processes is marked ``integration``, so that
``make test-fast`` (``pytest -m "not integration"``) starts none and stays fast.

A module starts processes when it asks for a fixture that does (conftest.py's, found by
what their bodies call), or imports a module whose job is starting them. Read from the
source, so a new module is held to it before it ever runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Modules whose job is starting processes: redis-server, celery, uvicorn, the SMTP sink
# of the benchmark, the stack of `make run`, the chaos soak, any subprocess.
PROCESS_MODULES = {
    "tests.procs",
    "devtools.procs",
    "devtools.run_stack",
    "devtools.chaos",
    "bench.run",
    "bench.smtp_sink",
    "subprocess",
    "multiprocessing",
}
# Names from those modules that start nothing themselves.
HELPERS = {"BIN", "ROOT", "free_port", "wait_for", "WaitTimedOut"}
# Modules that import one of them and still start nothing of the stack, and why.
STARTS_NOTHING = {
    "test_compose": "runs only `docker compose config`, a validator of the file",
    "test_monitoring": "runs only promtool's and docker compose's validators of files",
}


def _imports(tree: ast.Module) -> dict[str, str]:
    """Each name the module binds by import, to the module it comes from."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _starters(tree: ast.Module) -> set[str]:
    """The names in ``tree`` that start processes when called or used."""
    return {
        name
        for name, module in _imports(tree).items()
        if module in PROCESS_MODULES and name not in HELPERS
    }


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = function.args
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}


def _used(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}


def _process_fixtures(tree: ast.Module, known: set[str]) -> set[str]:
    """The fixtures defined in ``tree`` that start processes: they call a starter, or
    ask for a fixture that does (to a fixed point)."""
    starters = _starters(tree)
    fixtures = [
        f
        for f in _functions(tree)
        if any("fixture" in ast.unparse(decorator) for decorator in f.decorator_list)
    ]
    found = set(known)
    changed = True
    while changed:
        changed = False
        for fixture in fixtures:
            if fixture.name in found:
                continue
            if _used(fixture) & starters or _parameters(fixture) & found:
                found.add(fixture.name)
                changed = True
    return found


CONFTEST_FIXTURES = _process_fixtures(ast.parse((TESTS / "conftest.py").read_text()), set())


def _marked_integration(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            return "pytest.mark.integration" in ast.unparse(node.value)
    return False


def _why_integration(tree: ast.Module) -> str | None:
    """What in the module starts processes, or None."""
    modules = sorted({m for m in _imports(tree).values() if m in PROCESS_MODULES})
    if modules:
        return f"imports {', '.join(modules)}"
    fixtures = _process_fixtures(tree, CONFTEST_FIXTURES)
    for function in _functions(tree):
        asked = _parameters(function) & fixtures
        if asked:
            return f"{function.name} asks for {', '.join(sorted(asked))}"
    return None


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in sorted(TESTS.glob("test_*.py"))}


def test_the_conftest_fixtures_that_start_processes_are_found() -> None:
    # The guard below is only as good as this list: redis-server, and the API and
    # worker on top of it.
    assert {"redis_server", "stack", "quiet_api"} <= CONFTEST_FIXTURES
    assert not {"log_dir", "smtp"} & CONFTEST_FIXTURES  # a directory; a thread


def test_every_module_that_starts_processes_is_marked_integration() -> None:
    unmarked = []
    for name, tree in _modules().items():
        why = _why_integration(tree)
        if why and name not in STARTS_NOTHING and not _marked_integration(tree):
            unmarked.append(f"{name}: {why}")
    assert not unmarked, (
        "mark these modules `pytestmark = pytest.mark.integration` (make test-fast must "
        "start no process):\n" + "\n".join(unmarked)
    )


def test_the_guard_sees_the_known_integration_modules() -> None:
    modules = _modules()
    for name in ("test_end_to_end", "test_dispatch", "test_make_run", "test_bench_smoke"):
        assert _why_integration(modules[name]), name
    assert _why_integration(modules["test_schemas"]) is None
