# Set-up and the two jobs: `make repro` (the embedded default pipeline) and `make test` (lint, then the tests).
# The first of these that is Python 3.11-3.14 (python3 first: on most machines the system's own).
SUPPORTED := python3 python3.14 python3.13 python3.12 python3.11
PYTHON ?= $(firstword $(foreach p,$(SUPPORTED),$(shell $(p) -c 'import sys; print("$(p)" if (3, 11) <= sys.version_info[:2] <= (3, 14) else "")' 2>/dev/null)))
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: install repro quick video test

install: $(STAMP)

# constraints.txt pins every package version (pip freeze of a working install); pip honours it with -c.
$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "dmd needs Python 3.11-3.14: install one (e.g. apt install python3.11) or give it as make PYTHON=/path/to/python3.x"; exit 1; }
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

# The moving-digits video default (pipelines/moving-digits/params.yaml), on the class-conditional template.
video: $(STAMP)
	sed 's/^  - profile: .*/  - profile: moving-digits/' pipelines/templates/class-conditional.yaml > pipelines/moving-digits/dvc.yaml
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro pipelines/moving-digits/dvc.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
