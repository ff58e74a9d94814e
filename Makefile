# The two commands a new user needs:
#   make demo   set up a local virtual environment (first time) and run `convotree demo`
#   make test   set up the same environment and run every check: ruff, mypy, pytest
# Also: make bench (benchmarks), make clean.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# Machines without internet cannot download tiktoken's encodings: use the shared
# offline copy beside the checkout when there is one and nothing else is configured.
ifeq ($(origin TIKTOKEN_CACHE_DIR),undefined)
ifneq ($(wildcard ../shared/tiktoken),)
export TIKTOKEN_CACHE_DIR := $(abspath ../shared/tiktoken)
endif
endif

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/convotree demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

bench: $(VENV)/.installed
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache convotree-demo.db*
