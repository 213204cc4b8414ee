# The two commands of the README: `make run` and `make test`. Everything else here serves them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: run test setup bench assure clean

# A virtualenv with the hub and its test tools, rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The hub on http://$(HOST):$(PORT) with a Celery worker and beat, on SQLite and a broker that needs no server,
# with a demo clinic, EHR client and sample referrals. Ctrl-C stops all of it.
run: setup
	@test -f .env || printf '# written by make run: this checkout is the embedded demo\nDEBUG=true\n' > .env
	@# The links in the demo's e-mails and notifications name the port it really runs on.
	@export HUB_PUBLIC_BASE_URL="$${HUB_PUBLIC_BASE_URL:-http://$(HOST):$(PORT)}"; \
	$(PY) manage.py migrate --noinput -v 0 && \
	$(PY) manage.py load_demo --base-url http://$(HOST):$(PORT) && \
	$(PY) manage.py load_console_history && \
	{ $(VENV)/bin/celery -A config worker --beat -Q routing,delivery,sweeps --loglevel WARNING --concurrency 2 \
	      --schedule .var/celerybeat-schedule & worker=$$!; \
	  trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	  $(PY) manage.py runserver $(HOST):$(PORT) --noreload; }

# The whole suite. DATABASE_URL and CELERY_BROKER_URL choose PostgreSQL and Redis/RabbitMQ; without them it runs on
# the embedded SQLite and filesystem broker.
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The robustness runs at full size (the suite runs them small): Hypothesis's mutated PA fixtures, 1,000 examples
# per property, and schemathesis against /openapi.json, 1,000 examples per operation. Set DATABASE_URL and
# CELERY_BROKER_URL to run them on PostgreSQL and Redis. Prints each property's examples and answers.
# FUZZ_SECONDS=10 bounds each operation's generated examples in time (0: no bound).
FUZZ_SECONDS ?= 0
assure: setup
	HUB_PROPERTY_EXAMPLES=1000 HUB_FUZZ_EXAMPLES=1000 HUB_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -p no:cacheprovider -q -rs \
	    --hypothesis-show-statistics tests/fhir_bridge/test_properties.py tests/config/test_openapi_fuzz.py

bench: setup
	$(PY) -m bench.intake

clean:
	rm -rf $(VENV) .var .pytest_cache
