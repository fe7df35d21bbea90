# The two set-up commands of the README: `make demo` and `make test`. Both create the
# virtualenv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DJANGO ?=

.PHONY: demo test test-unit test-integration test-postgres test-postgres-prepared test-django42 lint \
	format bench sandbox clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' $(if $(DJANGO),'Django~=$(DJANGO).0')
	touch $@

demo: $(VENV)/.installed
	$(PY) example_project/demo.py

# The whole suite: lint, then unit + whole-flow tests on SQLite, then the whole suite again on
# PostgreSQL, which adds the integration tests (Redis + real Celery workers). Without PostgreSQL
# or Redis the tests that need them skip with a hint on a laptop, and fail under CI=true.
test: $(VENV)/.installed lint test-unit test-postgres

test-unit: $(VENV)/.installed
	$(VENV)/bin/pytest -m "not postgres and not redis and not worker"

# Only the tests marked postgres, redis or worker.
test-integration: $(VENV)/.installed
	TALONONE_TEST_DB=postgres $(VENV)/bin/pytest -m "postgres or redis or worker" -p no:randomly

# Every test on PostgreSQL: the pipelined reads and writes, SKIP LOCKED claims and JSON documents
# only run there.
test-postgres: $(VENV)/.installed
	TALONONE_TEST_DB=postgres $(VENV)/bin/pytest

# The same with server-side binding and prepared statements (see docs/operations.md).
test-postgres-prepared: $(VENV)/.installed
	TALONONE_TEST_DB=postgres \
	TALONONE_TEST_PG_OPTIONS='{"server_side_binding": true, "prepare_threshold": 2}' \
	$(VENV)/bin/pytest -m "not redis and not worker"

# The same suite on the other supported Django LTS, in its own virtualenv.
test-django42:
	$(MAKE) test-unit VENV=.venv-django42 DJANGO=4.2

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check django_talonone tests bench scripts example_project

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The pipeline scripts need PostgreSQL and Redis on 127.0.0.1 (as `make test-integration` does).
bench: $(VENV)/.installed
	$(PY) bench/client_overhead.py
	$(PY) bench/sandbox_throughput.py
	$(PY) bench/evaluate_cart_overhead.py
	$(PY) bench/pipeline_throughput.py

sandbox: $(VENV)/.installed
	$(PY) -m django_talonone.sandbox --port 8123 --campaigns django_talonone/sandbox/campaigns/demo.json

clean:
	rm -rf $(VENV) .venv-django42 .pytest_cache .ruff_cache build dist
