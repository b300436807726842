# The two README commands: `make demo` (main job) and `make test` (test suite).
# Each creates $(VENV) with $(PYTHON) and installs what it needs into it (and nothing more):
#   make demo: the project with the extras the demo runs (demo, embedded), the explorer (ui) and
#              the MCP server it points agents at (mcp)
#   make test: the project with the test extras, plus the system programs the tests drive
# `make PYTHON=python3.13 test` uses another interpreter; a $(VENV) made by another Python is
# made anew.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY_TAG := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
BASE := $(VENV)/.base-$(PY_TAG)
DEMO_STAMP := $(VENV)/.demo-$(PY_TAG)
TEST_STAMP := $(VENV)/.test-$(PY_TAG)
BENCH_STAMP := $(VENV)/.bench-$(PY_TAG)

.PHONY: venv demo test system-deps lint bench clean

$(BASE):
	@test -n "$(PY_TAG)" || { echo "make: $(PYTHON) not found (needs Python >= 3.10)" >&2; exit 1; }
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PY_TAG)" ]; then \
	  echo "$(VENV) was made by another Python: making it anew with $(PYTHON) ($(PY_TAG))"; rm -rf $(VENV); fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $(BASE)

$(DEMO_STAMP): pyproject.toml $(BASE)
	$(BIN)/python -m pip install --quiet -e ".[demo,embedded,ui,mcp]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml $(BASE)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

$(BENCH_STAMP): $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

venv: $(TEST_STAMP)

# the main job: uses OTEL_EXPORTER_POSTGRES_DSN / DATABASE_URL, else an embedded PostgreSQL
demo: $(DEMO_STAMP)
	$(BIN)/otel-pg-demo $(DEMO_ARGS)

# chromium and pgbouncer, through the system's package manager when missing (tests/system-deps.sh)
system-deps:
	@sh tests/system-deps.sh

test: $(TEST_STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench

# full benchmark (several minutes; loads 1M spans): needs OTEL_PG_BENCH_DSN
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) dist build .pytest_cache .ruff_cache
