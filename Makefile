# Thin wrappers around the two README commands and the benchmarks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run demo test lint lock bench reliability

install:  # .venv from requirements/test.lock (a no-op when already in step with it)
	PY=$(PY) bash scripts/sync_venv.sh --exact requirements/test.lock

run: install
	$(BIN)/postway serve

demo: install
	$(BIN)/postway serve --demo

test:
	bash scripts/test.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/postway

lock:  # remake requirements/*.lock from pyproject.toml (see scripts/lock.sh for --upgrade)
	bash scripts/lock.sh

bench: install  # as root: a private Postfix instance; needs postfix, wrk and PostgreSQL
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick)

reliability: install  # the harnesses behind docs/reliability.md (about 75 minutes; root for the tmpfs)
	$(BIN)/python bench/run_all.py --reliability
