# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each creates or refreshes the virtual environment itself, then runs.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed
OUT    ?= data/tiny

.PHONY: demo test env clean-env

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

clean-env:
	rm -rf $(VENV)
