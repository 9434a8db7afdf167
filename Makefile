# `make run` and `make test` each take a fresh machine all the way: they make
# the virtualenv, install, and run.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test lint bench faults clean system-packages

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(BIN)/targetsms-receiver: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/targetsms-receiver  ## Install and run the service on SQLite (./targetsms-receiver.db)
	$(BIN)/targetsms-receiver serve --host $(HOST) --port $(PORT)

lint: $(BIN)/targetsms-receiver  ## ruff and mypy
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/ruff format --check app tests bench migrations
	$(BIN)/mypy

# The reverse-proxy tests run a real nginx, the dashboard's browser tests
# Debian's chromium (Playwright never downloads a browser), from Debian's packages.
system-packages:  ## Install nginx and chromium when missing (needs root and apt-get)
	@if { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } && [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx chromium; \
	else echo "nginx or chromium is missing and cannot be installed here: their tests skip (fail under CI=true)"; fi

test: $(BIN)/targetsms-receiver lint system-packages  ## Install, lint, and run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/pytest -p no:cacheprovider

bench: $(BIN)/targetsms-receiver  ## Benchmark against the floors, writes bench/RESULTS.md (BENCH_ARGS=--quick: a short run)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

faults: $(BIN)/targetsms-receiver  ## The fault tests in their full form (50 kill cycles, 10 s outage, ...)
	FAULTS_FULL=1 $(BIN)/pytest -p no:cacheprovider tests/faults

clean:  ## Remove the virtualenv and local databases
	rm -rf $(VENV) *.db *.db-wal *.db-shm
