# Two entry points (see README): `make quickstart` and `make test`.
# Both create .venv with Python 3.11 when missing and install the project into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test test-large lint benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps: reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(BIN)/kerasmtl quickstart

# pytest exits 5 when it collects no test: that is a failure, not a pass.
# One pytest process per core (at most 4), whole files to a process so that
# module fixtures (exported models, corpora) are built once.
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --numprocesses=auto --maxprocesses=4 --dist=loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-large: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m large; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no large tests collected" >&2; exit 0; fi; exit $$rc

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/sharing_cost.py

clean:
	rm -rf $(VENV) exported build *.egg-info
