# Every target installs what it needs first: a fresh clone needs only `make run` or `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch/torchvision are pinned to the builds this machine keeps on disk (see pyproject.toml).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The report's browser test drives Debian's Chromium through chromedriver.
CHROMEDRIVER := /usr/bin/chromedriver

$(CHROMEDRIVER):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: $(STAMP) $(CHROMEDRIVER)
	@if [ -z "$$TEST_DATABASE_URL" ]; then \
		echo "NOTE: TEST_DATABASE_URL is unset: the PostgreSQL half of the suite will NOT run" \
		"(e.g. TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test make test)"; \
	fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The service on the embedded default (SQLite under ./var, a local Ray head), a first API
# key, and the digits demo submitted to it; Ctrl-C stops the service and Ray.
run: $(STAMP)
	$(BIN)/clrstudy demo

# Mutation testing of clr/ and service/reports/ (mutmut; settings in setup.cfg). Slow: it is
# not part of `make test` nor of CI. MUTATE_JOBS: test processes at once.
MUTATE_JOBS ?= 2
.PHONY: mutate
mutate: $(STAMP)
	$(BIN)/mutmut run --max-children $(MUTATE_JOBS)
	$(BIN)/mutmut results

bench: $(STAMP)
	$(BIN)/python bench/engine_vs_raw.py
	$(BIN)/python bench/parallel_trials.py
	$(BIN)/python bench/report_render.py
	$(BIN)/python bench/tuning_search.py
	$(BIN)/python bench/service_latency.py

clean:
	rm -rf $(VENV) var out .pytest_cache .mypy_cache .ruff_cache
