# tomoweave: `make demo` runs the whole pipeline on simulated data, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_project

.PHONY: demo test bench lint install system-packages clean portability

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive for real (RELION for motion-correction comparison, Chromium for the GUI).
system-packages:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v relion_run_motioncorr >/dev/null || missing="$$missing relion"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
	    echo "warning: could not install$$missing"; \
	  fi; \
	fi

demo: install
	$(BIN)/tomoweave demo $(DEMO_DIR)

test: install system-packages
	$(BIN)/python -m pytest -q -n 2

bench: install system-packages
	$(BIN)/python -m benchmarks

# The suite with numba compiled for a CPU without AVX, then on one thread: catches tolerances that
# hold only for one summation order (DEVELOPERS.md).
portability: install
	NUMBA_CPU_NAME=generic NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache/generic $(BIN)/python -m pytest -q -n 2 -p no:cacheprovider
	NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache/one-thread $(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

lint: install
	$(BIN)/ruff check tomoweave tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
