# grpc-shop: `make demo` runs the shop and puts load on it, `make test` runs the tests.
# Each target sets up what it needs: a virtual environment from pyproject.toml, and
# the Debian packages the tests use (installed with apt-get when missing and root).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv sysdeps demo lab up test check fmt proto bench clean

help:
	@echo "make demo    start the shop on loopback, load it, print what it saw, stop;"
	@echo "             then a short balancing lab over every mode"
	@echo "make lab     the balancing lab with its default durations (results/lab)"
	@echo "make test    run the test suite (sets up .venv and system packages)"
	@echo "make check   ruff (lint + format check) and mypy"
	@echo "make bench   telemetry and hop cost, measured side by side"
	@echo "make proto   regenerate services/shop/v1 from proto/"
	@echo "make up      run the shop until Ctrl-C"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# xds-protos ships its own, older copy of the opentelemetry/proto modules and
	@# overwrites opentelemetry-proto's files; put the real ones back on top (the
	@# tracing tests fail without InstrumentationScope).
	$(PY) -m pip install --quiet --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(PY) -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
	touch $(STAMP)

venv: $(STAMP)

sysdeps: venv
	$(PY) -m shop.local.sysdeps --install

demo: venv sysdeps
	$(VENV)/bin/shop demo
	$(VENV)/bin/shop lab --steady 4 --scale-window 8 --out results/lab

lab: venv sysdeps
	$(VENV)/bin/shop lab --out results/lab

up: venv
	$(VENV)/bin/shop up

test: venv sysdeps
	$(VENV)/bin/pytest

check: venv
	$(VENV)/bin/ruff format --check services tests
	$(VENV)/bin/ruff check services tests
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format services tests
	$(VENV)/bin/ruff check --fix services tests

proto: venv
	$(PY) -m shop.codegen

bench: venv
	$(VENV)/bin/shop bench

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
