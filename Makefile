# orderbus: `make run` runs the whole system, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp

# With ORDERBUS_MQTT_URL set, the service uses that broker and the embedded one is not started.
ifdef ORDERBUS_MQTT_URL
PROCS ?= api relay
PREFLIGHT := --no-embedded-broker
else
PROCS ?=
PREFLIGHT := --embedded-broker
endif

.PHONY: install run test lint format migrate clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) -m order_service migrate

run: install
	@$(PY) -m order_service preflight $(PREFLIGHT)
	@$(PY) -m order_service migrate
	@$(PY) -m order_service bootstrap
	PATH="$(BIN):$$PATH" $(BIN)/honcho start -f Procfile $(PROCS)

test: install
	$(BIN)/ruff check .
	PATH="$(BIN):$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
