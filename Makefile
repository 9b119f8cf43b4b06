# Two commands for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test test-unit bench schemas postgres kafka clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

## Run the platform on the embedded default (SQLite under ./var, store transport).
run: install
	$(BIN)/carbon up

## The whole suite: unit, contract (SQLite + PostgreSQL), integration, e2e.
## Tests start the local PostgreSQL themselves unless CARBON_TEST_DATABASE_URL is set.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

schemas: install
	$(BIN)/python -m contracts.export

postgres:
	deploy/local/postgres.sh start

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
