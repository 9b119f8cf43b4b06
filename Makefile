# Two commands for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test test-unit fuzz bench schemas postgres kafka clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

# Disclosure PDFs: WeasyPrint needs Pango (and HarfBuzz subsetting); the CJK font renders Chinese names.
SYSTEM_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-wqy-microhei

install: $(STAMP)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $$missing >&2 || { apt-get update -q >&2 && apt-get install -y -q $$missing >&2; }; \
	  else echo "install: missing $$(echo $$missing); as root run: apt-get install -y $$(echo $$missing)" >&2; fi; \
	fi

## Run the platform on the embedded default (SQLite under ./var, store transport), then play the
## end-to-end story; the story's partner receives webhooks on loopback, hence the private-address allowance.
run: install
	CARBON_WEBHOOK_ALLOW_PRIVATE=$${CARBON_WEBHOOK_ALLOW_PRIVATE:-true} $(BIN)/carbon up --demo

## The whole suite: unit, contract (SQLite + PostgreSQL), integration, e2e.
## Tests start the local PostgreSQL themselves unless CARBON_TEST_DATABASE_URL is set.
test: install
	deploy/local/tools.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## Fuzz every HTTP API against its own OpenAPI document, deeper than `make test` does: more examples,
## boundary values, stateful sequences, on SQLite and PostgreSQL (tests/contract/test_fuzz_api.py).
fuzz: install
	CARBON_FUZZ_DEEP=1 $(BIN)/python -m pytest tests/contract/test_fuzz_api.py $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

schemas: install
	$(BIN)/python -m contracts.export

postgres:
	deploy/local/postgres.sh start

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
