# Everything runs from .venv/, built by `make install` from uv.lock with only Python 3.11+
# and make on the machine: uv itself is bootstrapped into the venv from PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint unit integration clean

install: $(STAMP)

$(STAMP): uv.lock pyproject.toml shared_schemas/pyproject.toml api_service/pyproject.toml worker_service/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --python $(BIN)/python
	@touch $(STAMP)

# The whole stack in the foreground: redis, an SMTP catcher, the API and one worker.
run: install
	$(BIN)/python -m devtools.run_stack

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared_schemas/src api_service/src worker_service/src tests devtools bench
	$(BIN)/lint-imports
	$(BIN)/hadolint api_service/Dockerfile worker_service/Dockerfile

test: lint
	$(BIN)/pytest

# ruff and the tests that start no process (pytest -m "not integration"): under 30 s.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -m "not integration"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The benchmark (bench/run.py): the project against a tutorial-style baseline and the
# floors, on this machine, with k6 as the load generator. About 10 minutes; results in
# bench/results/ (git-ignored).
.PHONY: bench bench-smoke
bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.content_cost

# The same, tiny and untimed (seconds per phase): checks that it still works.
bench-smoke: install
	$(BIN)/python -m bench.run --smoke --out bench/results/smoke

# Only the relay rounds of the benchmark: the shipped worker command against
# a relay on localhost and one 50 ms away, and SMTP_RATE_LIMIT across three nodes. About
# two minutes; results in bench/results/relay/.
.PHONY: bench-relay
bench-relay: install
	$(BIN)/python -m bench.run --only relay

# A chaos soak (devtools/chaos.py): ~1,000 mails while nodes are killed and Redis restarts; ≤5 min.
.PHONY: chaos
chaos: install
	$(BIN)/python -m devtools.chaos $(CHAOS_ARGS)
