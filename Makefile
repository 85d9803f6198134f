# The two commands of the README. Each creates (or reuses) .venv and installs the pinned
# dependencies itself; the install re-runs only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed
EXTRAS ?= cuda120,demo,test

.PHONY: train test

train: $(INSTALLED)
	$(VENV)/bin/python -m train

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q

$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@
