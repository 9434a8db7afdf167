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

# Two steps, each with its own stamp: the service alone (`make run`), then the
# test extras on top (lint, test, bench, faults). `make run` first does not
# stop `make test` from installing the extras: they have their own target.
$(BIN)/targetsms-receiver: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/pytest: $(BIN)/targetsms-receiver pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/targetsms-receiver  ## Install the service (no test tools) and run it on SQLite (./targetsms-receiver.db)
	$(BIN)/targetsms-receiver serve --host $(HOST) --port $(PORT)

lint: $(BIN)/pytest  ## ruff and mypy
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

test: $(BIN)/pytest lint system-packages  ## Install, lint, and run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/pytest -p no:cacheprovider

bench: $(BIN)/pytest  ## Benchmark against the floors, writes bench/RESULTS.md (BENCH_ARGS=--quick: a short run)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

faults: $(BIN)/pytest  ## The fault tests in their full form (50 kill cycles, 10 s outage, ...)
	FAULTS_FULL=1 $(BIN)/pytest -p no:cacheprovider tests/faults

# .env too: the one-machine walkthrough (README) leaves one, and it would
# silently change every later run from this folder.
clean:  ## Remove the virtualenv, local databases and .env
	rm -rf $(VENV) *.db *.db-wal *.db-shm .env
