# tomoweave: `make demo` runs the whole pipeline on simulated data, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_project

.PHONY: demo test bench lint install system-packages clean

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

lint: install
	$(BIN)/ruff check tomoweave tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
