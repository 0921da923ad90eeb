# The two commands: `make demo` and `make test`. Both set everything up from a bare checkout.
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: install demo test lint typecheck imports docs clean servers bench test-floor floor-lock

install: $(VENV)/.installed

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# DESIGN §4's layers (pyproject's [tool.importlinter]).
imports: install
	$(BIN)/lint-imports

# The operators guides (docs/, Sphinx): each example DAG's code included from its file; a warning fails the build.
docs: install
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# Local servers of the integration tests: Azurite from npm (pinned in tests/servers); Debian's sshd and
# PostgreSQL 15, chromium for the real-Airflow screenshots, and redis-server for the CeleryExecutor test's broker,
# installed with apt when missing and we are root (without them, those tests skip).
APT_PACKAGES := $(if $(wildcard /usr/sbin/sshd),,openssh-server) \
	$(if $(wildcard /usr/lib/postgresql/15/bin/initdb),,postgresql) \
	$(if $(wildcard /usr/bin/chromium),,chromium) \
	$(if $(wildcard /usr/bin/redis-server),,redis-server)

servers: tests/servers/node_modules/.installed
	@if [ -n "$(strip $(APT_PACKAGES))" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(strip $(APT_PACKAGES)) >/dev/null \
		|| echo "could not install $(strip $(APT_PACKAGES)): their tests skip"; fi

tests/servers/node_modules/.installed: tests/servers/package.json tests/servers/package-lock.json
	cd tests/servers && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# pytest runs last, so its summary line is the last line printed.
test: lint typecheck imports docs servers test-floor
	$(BIN)/pytest

# The declared floor, proven: .venv-floor holds every dependency of pyproject.toml (extras too) at the lowest
# version it declares, from the committed tests/floor/requirements.txt, and runs the smoke tests of tests/floor
# (imports, every example DAG parsed, connection forms, dag.test() of the DAGs that need no cloud).
# Cost: building the venv from a warm uv cache takes 45 s on a quiet machine, 2.5 min on a loaded one (again
# only when the lock or pyproject.toml changes); the tests take ~25 s. The lock is resolved for this Python (3.11).
# `make floor-lock` resolves the lock again after a floor in pyproject.toml changed; it fails when the declared
# floors do not resolve together, and then a floor is to be raised.
FLOOR_VENV := .venv-floor
FLOOR_LOCK := tests/floor/requirements.txt

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/pytest --confcutdir=tests/floor -p no:cacheprovider tests/floor

$(FLOOR_VENV)/.installed: $(FLOOR_LOCK) pyproject.toml | $(UV)
	rm -rf $(FLOOR_VENV)
	$(UV) venv --quiet $(FLOOR_VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(FLOOR_VENV)/bin/python $(FLOOR_LOCK)
	$(UV) pip install --quiet --no-deps --python $(FLOOR_VENV)/bin/python --editable .
	touch $@

floor-lock: install
	$(BIN)/python tests/floor/pins.py > .floors-of-pyproject.txt
	$(UV) pip compile --quiet pyproject.toml tests/floor/requirements.in --all-extras --constraint .floors-of-pyproject.txt \
		--custom-compile-command "make floor-lock" --output-file $(FLOOR_LOCK)
	rm .floors-of-pyproject.txt

# Benchmarks: this provider, dlt and the engines' own SQL on the same change files, shape by shape (see
# benchmarks/run.py and benchmarks/shapes.py; the PostgreSQL shapes start Debian's PostgreSQL, the S3 ones moto
# behind a latency proxy). `make bench` runs N = 100k, 1M and 5M; `make bench ROWS=1000000` runs one size, and its
# last line is `bench N=... ours_vs_dlt=... ours_vs_floor=... peak_rss_mib=... floor_rss_mib=...` followed by
# `<shape>_vs_floor=... <shape>_vs_dlt=...` for the other shapes.
# dlt, the ADBC driver and matplotlib come from the `bench` dependency group of the same lock (not installed by
# `make test`).
# Each job runs REPEAT times, interleaved; the best time and the highest peak RSS are reported.
ROWS ?= 100000 1000000 5000000
REPEAT ?= 3
BENCH_ARGS ?=

bench: install
	$(UV) sync --frozen --compile-bytecode --group bench --inexact --quiet
	$(BIN)/python -m benchmarks.run --rows $(ROWS) --repeat $(REPEAT) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .tools .pytest_cache .mypy_cache .ruff_cache docs/_build
