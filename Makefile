# CryptoVault developer commands. `make run` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./data
export HOST PORT DATA_DIR

.PHONY: run test soak lint schema schema-check bench install clean web web-if-node screenshots

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $$(tools/find-python) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

run: install web-if-node
	$(PY) -m cryptovault serve --host $(HOST) --port $(PORT)

# The suite on TEST_WORKERS processes (pytest-xdist; each module stays on one process,
# with its own store database and Redis prefix). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: install web-if-node
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The web app and GraphiQL (web/): `npm ci` from the committed lockfile, then codegen,
# typecheck and the Vite build into web/dist, each only when its inputs changed.
WEB_INPUTS := $(shell find web/src -type f -not -path 'web/src/gql/*' 2>/dev/null) \
	web/index.html web/graphiql.html web/vite.config.ts web/codegen.ts web/tsconfig.json \
	web/package.json schema.graphql

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_INPUTS)
	cd web && npm run build
	@touch $@

web: web/dist/index.html

# `make run` and `make test` build the web app when Node.js is there; without it the
# API runs alone (and the browser tests fail in CI, skip elsewhere).
web-if-node:
	@if tools/has-node; then $(MAKE) --no-print-directory web; \
	else echo "make: no Node.js >= 20 with npm: not building web/ (the API runs alone; / says how to build the app)"; fi

# Screenshots of every page into web/screenshots/ (a real server, headless Chromium).
screenshots: install web
	CRYPTOVAULT_SCREENSHOTS=web/screenshots $(PY) -m pytest -q tests/test_web_browser.py

# Long runs of the money path's model test (random schedules with pauses and crashes);
# not part of CI. SOAK_EXAMPLES schedules of up to 80 steps each.
SOAK_EXAMPLES ?= 400
soak: install
	CRYPTOVAULT_SOAK=1 CRYPTOVAULT_SOAK_EXAMPLES=$(SOAK_EXAMPLES) $(PY) -m pytest -q tests/test_trading_model.py

lint: install
	$(PY) -m ruff check cryptovault tests $(wildcard bench)
	$(PY) -m ruff format --check cryptovault tests $(wildcard bench)
	$(PY) -m mypy cryptovault
	$(VENV)/bin/lint-imports --no-cache

schema: install
	$(PY) -m cryptovault export-schema > schema.graphql

# In sync with the code, and no breaking change against the previous schema (the merge
# base with origin/main, else HEAD~1) that a deprecation did not announce first.
schema-check: install
	@$(PY) -m cryptovault export-schema | diff -u schema.graphql - \
		&& echo "schema.graphql is in sync" \
		|| (echo "schema.graphql is stale: run 'make schema'" && exit 1)
	@$(PY) -m cryptovault schema-diff

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache web/node_modules web/dist web/src/gql
