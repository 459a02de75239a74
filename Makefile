# Set-up and the two jobs: `make repro` (the embedded default pipeline) and `make test` (lint, then the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: install repro test

install: $(STAMP)

# constraints.txt pins every package version (pip freeze of a working install); pip honours it with -c.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
