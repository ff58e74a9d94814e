# The two commands a new user needs:
#   make demo   set up a local virtual environment (first time) and run `convotree demo`
#   make test   set up the same environment and run every check: ruff, mypy, pytest; then
#               the OpenAI-facing and database tests again on the oldest supported
#               releases of openai, SQLAlchemy, alembic, tiktoken, psycopg and rich
# Also: make bench (benchmarks), make test-citus (the suite on a local Citus cluster,
# docs/scale-out.md), make bench-peers (next to the Agents SDK and LangChain,
# in a virtual environment of their own), make clean.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OLDEST ?= .venv-oldest
# What the oldest releases are tested with: everything that calls openai, SQLAlchemy or
# alembic in a way a release could change (the rest is pure Python over those).
OLDEST_TESTS := tests/test_chat.py tests/test_summaries.py tests/test_cli_chat.py \
	tests/test_examples.py tests/test_openai_models.py tests/test_store.py \
	tests/test_migrations.py tests/test_app_alembic.py tests/test_context.py \
	tests/test_interchange.py tests/test_reporting.py tests/test_cli.py tests/test_async.py \
	tests/test_chat_faults.py tests/test_db_faults.py tests/test_migration_faults.py \
	tests/test_reporting_views.py

# Machines without internet cannot download tiktoken's encodings: use the shared
# offline copy beside the checkout when there is one and nothing else is configured.
ifeq ($(origin TIKTOKEN_CACHE_DIR),undefined)
ifneq ($(wildcard ../shared/tiktoken),)
export TIKTOKEN_CACHE_DIR := $(abspath ../shared/tiktoken)
endif
endif

.PHONY: demo test test-newest test-oldest test-citus lint bench bench-peers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --upgrade -e '.[dev]'
	touch $@

$(OLDEST)/.installed: pyproject.toml tests/oldest-supported.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -e '.[test]' -c tests/oldest-supported.txt
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/convotree demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: test-newest test-oldest

test-newest: lint
	$(VENV)/bin/pytest

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -c "import openai, sqlalchemy, alembic; print('oldest supported:', \
		'openai', openai.__version__, 'SQLAlchemy', sqlalchemy.__version__, \
		'alembic', alembic.__version__)"
	$(OLDEST)/bin/pytest $(OLDEST_TESTS)

# The suite against a local 3-node Citus cluster (docs/scale-out.md): needs Citus built
# for this machine's PostgreSQL; scripts/citus-cluster starts it (and stop stops it).
test-citus: $(VENV)/.installed
	scripts/citus-cluster start
	env $$(scripts/citus-cluster env) CONVOTREE_REQUIRE_POSTGRES=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m benchmarks
	$(PY) -m benchmarks plans

BENCH ?= .venv-bench
$(BENCH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH)/bin/python -m pip install --quiet -e '.[postgres,bench]'
	touch $@

bench-peers: $(BENCH)/.installed
	$(BENCH)/bin/python -m benchmarks peers

clean:
	rm -rf $(VENV) $(OLDEST) $(BENCH) build dist .pytest_cache .mypy_cache .ruff_cache convotree-demo.db*
