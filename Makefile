# Set-up and the two jobs: `make repro` (the embedded default pipeline) and `make test` (lint, then the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: install repro quick test

install: $(STAMP)

# constraints.txt pins every package version (pip freeze of a working install); pip honours it with -c.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro

# A 3-minute trial of every stage at reduced sizes (pipelines/quick/params.yaml), on the class-conditional template.
quick: $(STAMP)
	sed 's/^  - profile: .*/  - profile: quick/' pipelines/templates/class-conditional.yaml > pipelines/quick/dvc.yaml
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro pipelines/quick/dvc.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
