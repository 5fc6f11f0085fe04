# Two commands on a fresh machine with Python 3.11+ and make: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format schema migrate clean browser pgbouncer npm bench differential wheel \
	fuzz

# Folders whose package-lock.json `npm ci` installs: GraphiQL's offline assets, the JS client
# example, the GraphQL-over-HTTP audit and the real clients of tests/test_stream_clients.py.
NPM_FOLDERS := api/static/graphiql examples/js tests/audit tests/clients

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed api/static/graphiql/node_modules/.package-lock.json
	$(BIN)/session-service serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev browser pgbouncer npm
	$(BIN)/pytest $(PYTEST_ARGS)

# The compiled-versus-graphql-core differential test with ten times CI's examples.
differential: $(VENV)/.installed-dev
	SESSION_SERVICE_TEST_DIFFERENTIAL_EXAMPLES=1200 $(BIN)/pytest tests/test_compiled.py tests/test_variables.py $(PYTEST_ARGS)

# The fuzzing of HTTP and graphql-transport-ws against a live server (tests/test_fuzz.py) with ten
# times CI's examples, new ones each run (a few minutes).
fuzz: $(VENV)/.installed-dev
	SESSION_SERVICE_TEST_FUZZ_EXAMPLES=3000 $(BIN)/pytest tests/test_fuzz.py \
		--hypothesis-show-statistics $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api models tests bench

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: $(VENV)/.installed
	$(BIN)/session-service export-schema --output schema.graphql

migrate: $(VENV)/.installed
	$(BIN)/session-service migrate

# Headless Chromium for the browser tests, from Debian's packages: only as root, else quietly not.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; fi

# PgBouncer for the tests that run the service behind a transaction pooler
# (tests/test_pgbouncer.py), from Debian's packages: only as root, else quietly not.
PGBOUNCER ?= /usr/sbin/pgbouncer
pgbouncer:
	@if [ ! -x $(PGBOUNCER) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer; fi

npm: $(NPM_FOLDERS:%=%/node_modules/.package-lock.json)

%/node_modules/.package-lock.json: %/package-lock.json
	@if command -v npm >/dev/null; then cd $* && npm ci --no-audit --no-fund; \
	else echo "npm not found: $* not installed"; fi

# The sdist and the wheel in dist/, each carrying GraphiQL's files from npm and their licences
# (setup.py refuses to build without them).
wheel: $(VENV)/.installed-dev api/static/graphiql/node_modules/.package-lock.json
	$(BIN)/python -m build --outdir dist

# The benchmark (a few minutes; progress as it goes): writes bench/REPORT.md. wrk comes from
# Debian's packages.
bench: $(VENV)/.installed-dev
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; fi
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist
