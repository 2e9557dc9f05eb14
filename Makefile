# kubectl-vibe: every entry point bootstraps its own virtualenv(s) from scratch.
#   make demo    build the executable; port-forward three services on a simulated cluster
#   make test    the whole suite on the newest Python, the fast subset on Python 3.9
#   make build   the four krew archives, SHA256SUMS (dist/) and plugin.yaml's sha256 values
#   make lint    ruff check + ruff format --check
#   make bench   the performance benchmark (BENCH_ARGS=--quick: small, a few seconds)

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The newest CPython >= 3.9 runs the full suite and the build; 3.9 (the floor) the fast subset.
PYTHON_NEWEST ?= $(shell build/find-python newest)
PYTHON_OLDEST ?= $(shell build/find-python 3.9)
VENV := .venv
VENV_OLDEST := .venv-py39
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=
DEMO_ROOT := build/out/demo

.PHONY: help demo test test-newest test-oldest build lint format clean bench

help:
	@sed -n '2,7s/^#//p' Makefile

# A virtualenv is (re)made when it is missing, broken, or older than the requirements files.
# umask 022: shiv copies its bootstrap files' modes into the executable (reproducibility).
define make_venv
	umask 022; \
	if ! $(1)/bin/python -c 'import sys' >/dev/null 2>&1; then \
		rm -rf $(1) && "$(2)" -m venv $(1); \
	fi; \
	$(1)/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt; \
	touch $(1)/.installed
endef

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(call make_venv,$(VENV),$(PYTHON_NEWEST))

$(VENV_OLDEST)/.installed: requirements.txt requirements-dev.txt
	$(call make_venv,$(VENV_OLDEST),$(PYTHON_OLDEST))

test: test-newest test-oldest

test-newest: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-oldest: $(VENV_OLDEST)/.installed
	$(VENV_OLDEST)/bin/python -m pytest -q -m "not e2e and not slow" $(PYTEST_ARGS)

build: $(VENV)/.installed
	$(PY) build/build.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .

# The demo installs the executable the way krew does (a bin/ symlink into a store) and runs it
# through real kubectl, with nothing from this checkout on PATH.
demo: $(VENV)/.installed
	$(PY) build/build.py --platform host --no-manifest --out $(DEMO_ROOT)/dist
	rm -rf $(DEMO_ROOT)/bin $(DEMO_ROOT)/store && mkdir -p $(DEMO_ROOT)/bin $(DEMO_ROOT)/store
	tar -xzf $(DEMO_ROOT)/dist/kubectl-vibe_*.tar.gz -C $(DEMO_ROOT)/store
	ln -s ../store/kubectl-vibe $(DEMO_ROOT)/bin/kubectl-vibe
	PATH="$(CURDIR)/$(DEMO_ROOT)/bin:$(CURDIR)/$(VENV)/bin:$$PATH" kubectl vibe version
	# The simulated cluster (web, db, cache), bounded traffic, a pod deletion and an OOM kill,
	# and `kubectl vibe port-forward svc/web svc/db svc/cache` through kubectl. Ctrl-C: the summary.
	PATH="$(CURDIR)/$(DEMO_ROOT)/bin:$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf dist build/out build/stage .pytest_cache

# Performance benchmark (issue 7): loopback only, every reference measured in the same run;
# prints a table and writes bench/results/last.json. BENCH_ARGS=--quick for the CI-sized run.
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) bench/bench.py $(BENCH_ARGS)
