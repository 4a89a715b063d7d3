# Scriptgen's two front doors: `make run` (set up, then serve with embedded
# defaults) and `make test` (set up, then every quality gate and the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: system-deps setup run test check lint typecheck buflint pytest proto proto-check bench capacity overload soak clean

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

# The suite in two steps (tests/sharing.py): the tests not marked `machine` on TEST_WORKERS
# pytest-xdist workers (0: in this process), then those that need the machine to themselves,
# in one process. Both steps run, and either failing fails the target. About 7.5 + 5.5 min on
# a slow 2-CPU machine, where one process took 18; a run that hangs fails here, not at CI's limit.
TEST_WORKERS ?= 2
pytest: $(STAMP)
	trap 'exit 130' INT TERM; status=0; \
	timeout --kill-after=30 1800 $(BIN)/pytest -n $(TEST_WORKERS) -m "not machine" || status=1; \
	timeout --kill-after=30 1200 $(BIN)/pytest -p no:xdist -m machine || status=1; \
	exit $$status

# The load scenarios of BENCHMARKS.md against servers started on loopback: each run's JSON
# and PNG go to BENCH_OUT, the medians over BENCH_RUNS runs to stdout, per BENCH_MODE (naive
# per-token relay, coalesced, or both side by side with their ratio; each run is capped by its
# scenario's --duration, 1620 s for all 13). One scenario:
# make bench BENCH_ARGS='--only sse-openai-200'; another core or gateway flag in every run:
# BENCH_ARGS='--server-arg=--provider-workers=1'. Not part of `make test`.
BENCH_RUNS ?= 3
BENCH_MODE ?= both
BENCH_OUT ?= $(or $(TMPDIR),/tmp)/scriptgen-bench
bench: $(STAMP)
	$(PY) -m scriptgen.loadtest.bench --runs $(BENCH_RUNS) --mode $(BENCH_MODE) --out $(BENCH_OUT) $(BENCH_ARGS)

# The core's capacity: streams at 30 tok/s held with a per-stream median >= 29.5 tok/s, TTFE p95
# <= 250 ms and no error, found by a sweep of `scriptgen loadtest` runs (RELIABILITY.md, "Capacity").
# About 2 min per level tried. Not part of `make test`.
CAPACITY_RUNS ?= 1
capacity: $(STAMP)
	$(PY) -m scriptgen.loadtest.capacity --runs $(CAPACITY_RUNS) $(CAPACITY_ARGS)

# Item 8 at full scale: twice CAPACITY streams offered to a core admitting CAPACITY
# (`--max-streams`); the excess must be refused fast, the admitted keep their rate.
CAPACITY ?= 350
overload: $(STAMP)
	$(PY) -m scriptgen.loadtest.capacity --overload-at $(CAPACITY) --runs $(CAPACITY_RUNS)

# Item 9 of RELIABILITY.md: a core admitting CAPACITY streams held at half of it (SOAK_STREAMS
# generations open at all times, 20-minute episodes at 30 tok/s): a warm-up, then a measured
# window of SOAK_SECONDS. The window opens once one job has run, the retention of 500 finished
# jobs is full (~6 min at 175 streams) and RSS has levelled off (median of the last 60 s at
# most 1 % above the 60 s before); a warm-up longer than 20 min fails. Fails on any error,
# resident memory growth >= 5 % in the window, or growing fds or asyncio tasks.
# SOAK_ARGS='--core-arg=--chroma-url=http://127.0.0.1:8000' runs it against a Chroma server,
# as deployed. Not part of `make test`.
SOAK_SECONDS ?= 600
SOAK_STREAMS ?= $(shell echo $$(( $(CAPACITY) / 2 )))
SOAK_PROJECTS ?= 10
soak: $(STAMP)
	$(PY) -m tests.faults.soak run --seconds $(SOAK_SECONDS) --streams $(SOAK_STREAMS) \
	  --capacity $(CAPACITY) --projects $(SOAK_PROJECTS) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
