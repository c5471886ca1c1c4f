# The two commands of the README. Each creates the repo-root .venv itself.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the local directory agent over sample/ (embedded SQLite, no API key needed)
run: $(STAMP)
	$(VENV)/bin/relaygraph run sample --db .relaygraph/sample-entities.db

## test: ruff, mypy and the whole test suite (installs PostgreSQL binaries if missing)
test: $(STAMP)
	bash scripts/ensure-postgres.sh
	$(MAKE) lint
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check graphs nodes tools server checkpoints device llm relaygraph harness
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python -m bench.round_trip
