# A thin layer over uv, dvc and pytest. `make` lists the targets.
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --locked --no-sync
# Test files or node ids to narrow test-unprivileged and test-container to (empty: every test).
TESTS ?=
# Parallel test processes (pytest-xdist; 0: one process). Each test file runs whole in one of them,
# so a module's fixtures (servers, clones) are built once; one test alone: `.venv/bin/pytest PATH::NAME`.
# Three on two cores: many tests wait on servers, subprocesses and the disk.
TEST_WORKERS ?= 3
# OpenMP's idle threads sleep instead of spinning in the test processes too (as in the stage
# processes, bin/python), unless you set OMP_WAIT_POLICY: three processes share two cores.
# Every run ends with its 20 slowest tests: where the suite's time goes, in each CI log.
PYTEST := OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(RUN) pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

.DEFAULT_GOAL := help
.PHONY: help setup runtime-lock repro test test-fast test-unprivileged test-container bench bench-all

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## Install the locked environment into .venv (and uv into .tools/ if it is missing)
	@command -v uv >/dev/null 2>&1 || [ -x .tools/bin/uv ] || \
		{ python3 -m venv .tools && .tools/bin/pip install --quiet "uv==$(UV_VERSION)"; }
	$(UV) sync --locked

runtime-lock: ## Re-export uv.lock's runtime dependencies into requirements-runtime.txt (after changing uv.lock)
	$(UV) export --locked --no-dev --no-hashes --no-emit-project --quiet > requirements-runtime.txt.tmp
	mv requirements-runtime.txt.tmp requirements-runtime.txt

repro: setup ## Set up, then run the full pipeline (dvc repro)
	$(RUN) dvc repro

test: setup ## Set up, then run every test suite
	$(PYTEST)

test-unprivileged: setup ## Set up, then run every suite but the container one (as any user)
	$(PYTEST) -m "not container" $(TESTS)

test-container: ## Run the container suite (needs root: debootstrap and rootful podman; `sudo make test-container`)
	$(PYTEST) -m container $(TESTS)

test-fast: setup ## Set up, then run the tests without the end-to-end, runner and container suites
	$(PYTEST) -m "not e2e and not runner and not container"

bench: setup ## Measure pipeline timings into bench/results.json
	$(RUN) python bench/pipeline.py

# One quiet run of every bench but the test suite's (bench/test_suite.py, over an hour): the
# serving, canary, monitor and wait-policy benches measure this checkout's reproduced outputs.
# The tools are checked before the repro, not after it.
bench-all: setup ## Re-measure every table in bench/ but the test suite's, one bench after another (needs hey, PostgreSQL)
	@command -v hey >/dev/null 2>&1 || { echo "make bench-all needs hey (apt-get install hey)" >&2; exit 1; }
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || \
		{ echo "make bench-all needs PostgreSQL's server (apt-get install postgresql)" >&2; exit 1; }
	$(RUN) dvc repro
	$(RUN) python bench/pipeline.py
	$(RUN) python bench/remote.py
	$(RUN) python bench/serving.py
	$(RUN) python bench/canary.py
	$(RUN) python bench/monitor.py
	$(RUN) python bench/wait_policy.py
	$(RUN) python bench/scale.py
