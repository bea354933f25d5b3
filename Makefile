# Every target creates the virtual environment it needs, so a fresh clone works
# with one command. PYTHON picks the interpreter (default: python3).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv chromium test test-unit test-integration quality lint typecheck tox run docs bench \
	screenshots clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Headless Chromium for the dashboard's browser tests: installed (as root, with apt-get)
## when missing, otherwise a message saying what to install.
chromium:
	@bash scripts/ensure_chromium.sh

## The README's test command: lint, type check and the whole suite with coverage.
## PostgreSQL's store tests run too when a server answers: KTRDR_TEST_POSTGRES_URL when
## set (empty skips them), else the local default if it accepts a connection.
test: quality chromium
	KTRDR_TEST_POSTGRES_URL="$${KTRDR_TEST_POSTGRES_URL-$$($(BIN)/python scripts/find_test_postgres.py)}" \
		$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv chromium
	$(BIN)/python -m pytest tests/integration tests/e2e $(PYTEST_ARGS)

quality: lint typecheck

lint: venv
	$(BIN)/ruff check ktrdr tests benchmarks scripts
	$(BIN)/ruff format --check ktrdr tests benchmarks scripts

typecheck: venv
	$(BIN)/mypy

## Every installed Python 3.10-3.13 plus lint and typecheck. Interpreters installed
## under pyenv are put on PATH so tox finds python3.10 ... python3.13 by name.
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
empty :=
space := $(empty) $(empty)
PYENV_BINS := $(subst $(space),:,$(strip $(wildcard $(PYENV_ROOT)/versions/3.1[0-3].*/bin)))
tox: venv
	PATH="$(PYENV_BINS):$$PATH" $(BIN)/tox run

## The README's run command: a backend and a training and a backtest worker with demo jobs.
UP_ARGS ?=
run: venv
	$(BIN)/ktrdr up --demo $(UP_ARGS)

docs: venv
	$(BIN)/ktrdr config docs

## The README's pictures: the dashboard and `ktrdr ops show --plot`, into docs/images/.
screenshots: venv chromium
	$(BIN)/python scripts/screenshots.py

## The benchmarks' peers (rq for bench_tiny_ops.py), installed once; without them (no
## network) that peer is skipped with a message and every benchmark still runs.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	@$(BIN)/python -m pip install --quiet -e '.[dev,bench]' && touch $(BENCH_STAMP) \
		|| echo "bench extra not installed: the rq peer of bench_tiny_ops.py is skipped"

bench: venv $(BENCH_STAMP)
	@status=0; for script in benchmarks/bench_*.py; do \
		echo "== $$script"; \
		$(BIN)/python $$script || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) .tox .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
