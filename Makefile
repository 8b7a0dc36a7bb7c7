# The two commands of the quick start: `make demo` and `make test`.
# Each one makes its own virtualenv in .venv and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench bench-large bench-chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "Installing cpworker and its dependencies into $(VENV): a few minutes, the first time only"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cpworker demo

test: $(STAMP)
	$(BIN)/ruff check cpworker handlers tests bench
	$(BIN)/ruff format --check cpworker handlers tests bench
	$(BIN)/mypy cpworker handlers
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check cpworker handlers tests bench
	$(BIN)/ruff format --check cpworker handlers tests bench

typecheck: $(STAMP)
	$(BIN)/mypy cpworker handlers

# Benchmarks print figures and how they got them, each against its anchor measured in
# the same run; they assert nothing. `bench`: the README's Performance table (about
# 30 minutes on 2 cores); `bench-large`: input and output with a 2 GiB blob;
# `bench-chaos`: the reliability runs (kill -9, SIGTERM, faults).
bench: $(STAMP)
	$(BIN)/python bench/p1_input.py
	$(BIN)/python bench/p2_output.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/dispatch.py --latency 0.02
	$(BIN)/python bench/pickup.py
	$(BIN)/python bench/p5_cold_start.py
	$(BIN)/python bench/isolation.py

bench-large: $(STAMP)
	$(BIN)/python bench/p1_input.py --large
	$(BIN)/python bench/p2_output.py --large

bench-chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
