# orderbus: `make run` runs the whole system, `make test` runs every test,
# `make security` the attacks alone (also part of `make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp

# With ORDERBUS_MQTT_URL set, the service uses that broker and the embedded one is not started;
# with ORDERBUS_BROKER_IN_RELAY=true the relay runs the embedded broker in its own process.
ifdef ORDERBUS_MQTT_URL
PROCS ?= api relay webhooks socketio
PREFLIGHT := --no-embedded-broker
else ifeq ($(ORDERBUS_BROKER_IN_RELAY),true)
PROCS ?= api relay webhooks socketio
PREFLIGHT := --embedded-broker
else
PROCS ?=
PREFLIGHT := --embedded-broker
endif

.PHONY: install run run-prod run-cluster test test-sqlite test-postgresql lint format migrate clean constraints node-test-deps admin-deps courier-deps chaos security broker-stop broker-start

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "error: orderbus needs Python 3.11 or newer; '$(PYTHON)' is older or missing." \
	         "Point PYTHON at one, e.g.: make PYTHON=python3.12 run" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,cluster]'
	@touch $(STAMP)

# Re-pin every transitive dependency from a clean install of pyproject.toml.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet --disable-pip-version-check -e '.[test,cluster]'
	{ echo "# Exact versions of every package (direct and transitive) that make install uses."; \
	  echo "# Regenerate after changing pyproject.toml: make constraints"; \
	  .venv-pin/bin/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt
	rm -rf .venv-pin

install: $(STAMP)

migrate: install
	$(PY) -m order_service migrate

run: install admin-deps courier-deps
	@$(PY) -m order_service preflight $(PREFLIGHT)
	@$(PY) -m order_service migrate
	@$(PY) -m order_service bootstrap
	@$(PY) -m order_service seed-catalog
	PATH="$(BIN):$$PATH" $(BIN)/honcho start -f Procfile $(PROCS)

# Production on one machine: PostgreSQL and the system's Mosquitto, both run by you
# (ORDERBUS_DATABASE_URL, ORDERBUS_MQTT_URL); several API workers, two relays. docs/production.md.
# admin-deps: the admin dashboard's mqtt.js and Leaflet, served by the API at /admin/vendor/.
run-prod: install admin-deps courier-deps
	@$(PY) -m order_service preflight --production
	@$(PY) -m order_service migrate
	@$(PY) -m order_service bootstrap
	@$(PY) -m order_service preflight --broker
	PATH="$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.production

# Three NATS nodes (JetStream, MQTT, MQTT over WebSocket) on loopback, the API, two relays and
# the bridges, on PostgreSQL: the machine's server, a database of its own (created if missing).
# Node i listens on ORDERBUS_BROKER_PORT + i - 1 and ORDERBUS_BROKER_WS_PORT + i - 1. docs/scaling.md.
CLUSTER_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/orderbus_cluster
CLUSTER_NODES := 3
run-cluster: install admin-deps courier-deps
	@export ORDERBUS_CLUSTER_NODES=$(CLUSTER_NODES) \
	  ORDERBUS_DATABASE_URL="$${ORDERBUS_DATABASE_URL:-$(CLUSTER_DATABASE_URL)}" && \
	$(PY) -m order_service preflight --cluster && \
	$(PY) -m order_service migrate && \
	$(PY) -m order_service bootstrap && \
	$(PY) -m order_service seed-catalog && \
	$(PY) -m order_service cluster-config && \
	PATH="$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.cluster

# The seed's socket.io-client, for tests/test_socketio_bridge.py (from the committed lock file).
NODE_TEST := bridges/node_test
$(NODE_TEST)/node_modules/.package-lock.json: $(NODE_TEST)/package-lock.json
	@if command -v npm >/dev/null; then cd $(NODE_TEST) && npm ci --no-audit --no-fund --loglevel=error; \
	elif [ "$$CI" = true ]; then echo "error: npm is required in CI (Socket.IO bridge tests)" >&2; exit 1; \
	else echo "npm not found: the Socket.IO bridge tests will be skipped" >&2; fi

node-test-deps: $(NODE_TEST)/node_modules/.package-lock.json

# The admin dashboard's mqtt.js (served at /admin/vendor/), from the committed lock file.
ADMIN := clients/admin
$(ADMIN)/node_modules/.package-lock.json: $(ADMIN)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed for the admin dashboard's mqtt.js:" \
	  "install Node.js and npm (Debian: apt-get install npm), then run make again" >&2; exit 1; }
	cd $(ADMIN) && npm ci --no-audit --no-fund --loglevel=error

admin-deps: $(ADMIN)/node_modules/.package-lock.json

# The courier app's mqtt.js (served at /courier/vendor/), from its own lock file: the app is
# installed on phones and upgrades on its own schedule, not the dashboard's.
COURIER := clients/courier
$(COURIER)/node_modules/.package-lock.json: $(COURIER)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed for the courier app's mqtt.js:" \
	  "install Node.js and npm (Debian: apt-get install npm), then run make again" >&2; exit 1; }
	cd $(COURIER) && npm ci --no-audit --no-fund --loglevel=error

courier-deps: $(COURIER)/node_modules/.package-lock.json

# make lint, then the suite on SQLite, then every database test again on PostgreSQL
# (ORDERBUS_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres;
# skipped if unreachable, unless CI=true).
# One backend only: make test-sqlite / make test-postgresql.
# Tests run in PYTEST_WORKERS processes (pytest-xdist; a test file stays in one process);
# PYTEST_WORKERS=0 runs them in this process, one after another.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile
test: lint node-test-deps admin-deps courier-deps
	PATH="$(BIN):$$PATH" ORDERBUS_TEST_DATABASE=sqlite $(PYTEST) $(PYTEST_ARGS)
	PATH="$(BIN):$$PATH" ORDERBUS_TEST_DATABASE=postgresql $(PYTEST) $(PYTEST_ARGS)

test-sqlite test-postgresql: test-%: lint node-test-deps admin-deps courier-deps
	PATH="$(BIN):$$PATH" ORDERBUS_TEST_DATABASE=$* $(PYTEST) $(PYTEST_ARGS)

# The security suite: every attack and abuse case (the `security` marker; tests/security_suite.py
# says which), on SQLite, as make test runs them. Six to nine minutes. See docs/security.md.
security: install node-test-deps admin-deps
	PATH="$(BIN):$$PATH" ORDERBUS_TEST_DATABASE=sqlite $(PYTEST) -m security $(PYTEST_ARGS)

# Fault tests (kills, restarts, stalls) and fuzzing at full length; make test runs them short.
# Bounded: about 3 minutes at these settings. See docs/testing.md, "Fault tests and fuzzing".
CHAOS_SCALE ?= 4
FUZZ_EXAMPLES ?= 50
chaos: install
	PATH="$(BIN):$$PATH" ORDERBUS_TEST_DATABASE=sqlite ORDERBUS_CHAOS_SCALE=$(CHAOS_SCALE) \
	  ORDERBUS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -s \
	  tests/test_chaos.py tests/test_broker_malformed.py tests/test_fuzz_api.py $(PYTEST_ARGS)

# make run's broker: stop it and keep it down (the API and the relay run on; changes wait in
# the outbox), then start it again. broker/supervise.py runs it under make run.
DATA_DIR = $(or $(ORDERBUS_DATA_DIR),var)
broker-stop:
	@touch "$(DATA_DIR)/broker.stopped"
	@if [ -f "$(DATA_DIR)/broker.pid" ]; then kill "$$(cat "$(DATA_DIR)/broker.pid")" 2>/dev/null || true; fi
	@echo "broker stopped; the API and the relay run on (make broker-start starts it again)"

broker-start:
	@rm -f "$(DATA_DIR)/broker.stopped"
	@echo "broker starting (within a second)"

# Lint, then type-check order_service/, broker/, bridges/ and contract/ ([tool.mypy] in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info $(NODE_TEST)/node_modules $(ADMIN)/node_modules $(LOADGEN)/node_modules

# Benchmarks (docs/benchmarks/README.md). make bench: the full suite, rewrites docs/benchmarks/;
# make bench BENCH_PROFILE=quick: a run of a few minutes into var/benchmarks/; BENCH_SOAK_SECONDS=N shortens B6.
BENCH_PROFILE ?= full
BENCH_OUT ?= $(if $(filter full,$(BENCH_PROFILE)),docs/benchmarks,var/benchmarks)
LOADGEN := clients/loadgen/node
.PHONY: bench
$(LOADGEN)/node_modules/.package-lock.json: $(LOADGEN)/package-lock.json
	@if command -v npm >/dev/null; then cd $(LOADGEN) && npm ci --no-audit --no-fund --loglevel=error; \
	elif [ "$$CI" = true ]; then echo "error: npm is required in CI (the benchmark smoke test)" >&2; exit 1; \
	else echo "npm not found: the benchmark smoke test will be skipped" >&2; fi
node-test-deps: $(LOADGEN)/node_modules/.package-lock.json

bench: install $(LOADGEN)/node_modules/.package-lock.json
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	PATH="$(BIN):$$PATH" $(PY) -m clients.loadgen --profile $(BENCH_PROFILE) --out $(BENCH_OUT) \
	  $(if $(BENCH_SOAK_SECONDS),--soak-seconds $(BENCH_SOAK_SECONDS))
