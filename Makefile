# `make run` and `make test` each take a fresh machine all the way: they make
# the virtualenv, install, and run.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test lint bench clean

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

test: $(BIN)/targetsms-receiver lint  ## Install, lint, and run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/pytest -p no:cacheprovider

clean:  ## Remove the virtualenv and local databases
	rm -rf $(VENV) *.db *.db-wal *.db-shm
