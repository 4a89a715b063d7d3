# Scriptgen's two front doors: `make run` (set up, then serve with embedded
# defaults) and `make test` (set up, then every quality gate and the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: system-deps setup run test check lint typecheck buflint pytest proto proto-check clean

setup: $(STAMP) $(BUF)

system-deps:
	bash scripts/system_deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BUF): package.json package-lock.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	touch $(BUF)

run: $(STAMP)
	$(BIN)/scriptgen serve

test: system-deps setup check

check: lint typecheck buflint proto-check pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

buflint:
	$(BUF) lint
	$(BUF) format --diff --exit-code

proto: setup
	$(PY) scripts/gen_protos.py

proto-check:
	$(PY) scripts/gen_protos.py --check

pytest:
	$(BIN)/pytest

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
