# The set-up commands of the README: `make demo` (the main job), `make test` and `make chaos`.
# `make test-cluster` runs the end-to-end test on the local cluster (docs/local-cluster.md);
# `make cluster-deps` installs the Postgres server it needs through the system package manager.
# Each creates or refreshes the virtual environment itself, then runs.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed
OUT    ?= data/tiny

.PHONY: demo test chaos test-cluster cluster-deps env clean-env

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (bpy needs it)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rodin demo --out $(OUT)

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q -ra --durations=15

# Every chaos test, the long variants too (`make test` runs only the fast ones); the figures go to
# $(CHAOS_REPORT) and are printed as a table.
CHAOS_REPORT ?= chaos-report
chaos: $(STAMP)
	RODIN_CHAOS_REPORT=$(CHAOS_REPORT) $(VENV)/bin/python -m pytest -q -ra -m chaos --timeout 3600 tests/chaos; \
	status=$$?; $(VENV)/bin/python benchmarks/chaos_table.py $(CHAOS_REPORT); exit $$status

test-cluster: $(STAMP) cluster-deps
	$(VENV)/bin/python -m pytest -q -ra --durations=5 -m cluster tests/infra

cluster-deps:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ command -v apt-get >/dev/null && apt-get update && apt-get install -y --no-install-recommends postgresql; } || \
		{ echo "PostgreSQL server binaries (initdb, pg_ctl) not found and apt-get is unavailable: install the PostgreSQL server with your package manager"; exit 1; }

clean-env:
	rm -rf $(VENV)
