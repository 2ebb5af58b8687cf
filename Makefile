# Thin wrappers around the two README commands and the benchmarks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run demo test lint bench

$(BIN)/postway: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/postway

run: install
	$(BIN)/postway serve

demo: install
	$(BIN)/postway serve --demo

test:
	bash scripts/test.sh

lint: install
	$(BIN)/ruff check src tests bench

bench: install  # as root: a private Postfix instance; needs postfix, wrk and PostgreSQL
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick)
