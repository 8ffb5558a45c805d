# tomoweave: `make demo` runs the whole pipeline on simulated data, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_project

.PHONY: demo test bench lint install system-packages clean portability relion5 relion5-if-possible

# RELION 5.1 (Debian sid's relion) needs a newer libc than this Debian: it runs in a sid chroot,
# built here once (about 1 GB; DEVELOPERS.md). Several checkouts can share one:
# TOMOWEAVE_RELION5_ROOT=/somewhere make relion5 (the tests read the same variable).
TOMOWEAVE_RELION5_ROOT ?= $(CURDIR)/.relion5
RELION5_STAMP := $(TOMOWEAVE_RELION5_ROOT)/.tomoweave-relion5

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench,cluster]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive for real (RELION for motion-correction comparison, Chromium for the GUI,
# a single-node SLURM for the cluster executor).
system-packages:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v relion_run_motioncorr >/dev/null || missing="$$missing relion"; \
	  command -v slurmctld >/dev/null || missing="$$missing slurm-wlm munge"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
	    echo "warning: could not install$$missing"; \
	  fi; \
	fi

demo: install
	$(BIN)/tomoweave demo $(DEMO_DIR)

test: install system-packages relion5-if-possible
	TOMOWEAVE_RELION5_ROOT=$(TOMOWEAVE_RELION5_ROOT) $(BIN)/python -m pytest -q -n 2

bench: install system-packages
	$(BIN)/python -m benchmarks

# The suite with numba compiled for a CPU without AVX, then on one thread: catches tolerances that
# hold only for one summation order (DEVELOPERS.md).
portability: install
	NUMBA_CPU_NAME=generic NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache/generic $(BIN)/python -m pytest -q -n 2 -p no:cacheprovider
	NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache/one-thread $(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

relion5: $(RELION5_STAMP)

$(RELION5_STAMP):
	@if [ "$$(id -u)" != "0" ]; then echo "make relion5: needs root (debootstrap, chroot)"; exit 1; fi
	@command -v debootstrap >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
	@if grep -q " $(TOMOWEAVE_RELION5_ROOT)" /proc/self/mounts; then \
	  echo "make relion5: something is mounted under $(TOMOWEAVE_RELION5_ROOT); unmount it first"; exit 1; fi
	rm -rf $(TOMOWEAVE_RELION5_ROOT).partial
	debootstrap --variant=minbase --include=relion sid $(TOMOWEAVE_RELION5_ROOT).partial
	chroot $(TOMOWEAVE_RELION5_ROOT).partial dpkg-query -W -f '$${Package} $${Version}\n' relion \
	  > $(TOMOWEAVE_RELION5_ROOT).partial/.tomoweave-relion5
	rm -rf $(TOMOWEAVE_RELION5_ROOT)
	mv $(TOMOWEAVE_RELION5_ROOT).partial $(TOMOWEAVE_RELION5_ROOT)

# `make test` builds the chroot when it can (root, Debian's packages reachable); otherwise the
# RELION 5 tests are skipped and say why.
relion5-if-possible:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null && [ ! -f $(RELION5_STAMP) ]; then \
	  $(MAKE) --no-print-directory relion5 || echo "warning: RELION 5 chroot not built; its tests say why"; \
	fi

lint: install
	$(BIN)/ruff check tomoweave tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

# The RELION 5 chroot is not removed by `make clean` (it takes minutes to build): remove it with
# `rm -rf .relion5` when nothing is mounted in it (tests mount only in private namespaces).
