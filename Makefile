# CryptoVault developer commands. `make run` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./data
export HOST PORT DATA_DIR

.PHONY: run test soak lint schema schema-check bench install clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $$(tools/find-python) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m cryptovault serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest -q

# Long runs of the money path's model test (random schedules with pauses and crashes);
# not part of CI. SOAK_EXAMPLES schedules of up to 80 steps each.
SOAK_EXAMPLES ?= 400
soak: install
	CRYPTOVAULT_SOAK=1 CRYPTOVAULT_SOAK_EXAMPLES=$(SOAK_EXAMPLES) $(PY) -m pytest -q tests/test_trading_model.py

lint: install
	$(PY) -m ruff check cryptovault tests $(wildcard bench)
	$(PY) -m ruff format --check cryptovault tests $(wildcard bench)
	$(PY) -m mypy cryptovault

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
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
