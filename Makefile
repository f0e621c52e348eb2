# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# `make test-cluster` runs the end-to-end test on the local cluster (docs/local-cluster.md);
# `make cluster-deps` installs the Postgres server it needs through the system package manager.
# Each creates or refreshes the virtual environment itself, then runs.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed
OUT    ?= data/tiny

.PHONY: demo test test-cluster cluster-deps env clean-env

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

test-cluster: $(STAMP)
	$(VENV)/bin/python -m pytest -q -ra --durations=5 -m cluster tests/infra

cluster-deps:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ command -v apt-get >/dev/null && apt-get update && apt-get install -y --no-install-recommends postgresql; } || \
		{ echo "PostgreSQL server binaries (initdb, pg_ctl) not found and apt-get is unavailable: install the PostgreSQL server with your package manager"; exit 1; }

clean-env:
	rm -rf $(VENV)
