# The two set-up commands of the README: `make demo` and `make test`. Both create the
# virtualenv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DJANGO ?=

.PHONY: demo test test-unit test-integration test-django42 lint format bench sandbox clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' $(if $(DJANGO),'Django~=$(DJANGO).0')
	touch $@

demo: $(VENV)/.installed
	$(PY) example_project/demo.py

# The whole suite: lint, then unit + whole-flow tests on SQLite, then the integration suite on
# PostgreSQL + Redis + real Celery workers (skipped with a hint on a laptop without them; a
# failure under CI=true).
test: $(VENV)/.installed lint test-unit test-integration

test-unit: $(VENV)/.installed
	$(VENV)/bin/pytest -m "not postgres and not redis and not worker"

test-integration: $(VENV)/.installed
	TALONONE_TEST_DB=postgres $(VENV)/bin/pytest -m "postgres or redis or worker" -p no:randomly

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
