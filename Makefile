# duly — developer commands. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: help venv test lint typecheck unit demo bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## create .venv and install duly with its test extras

lint: venv ## ruff, and the import layers (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

typecheck: venv ## mypy (strict)
	$(VENV)/bin/mypy

test: venv lint typecheck ## lint, type-check and run every test (SQLite and PostgreSQL)
	$(VENV)/bin/pytest

unit: venv ## only the fast pure tests
	$(VENV)/bin/pytest tests/unit -q

bench: venv ## run the benchmarks (prints figures)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
