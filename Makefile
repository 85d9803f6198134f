# The two commands of the README. Each creates (or reuses) .venv and installs the pinned
# dependencies it needs; an install re-runs only when pyproject.toml changes. --no-compile: byte-
# compiling all of torch takes over a minute on 2 cores; Python compiles what it imports anyway.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
DALI ?= cuda120

.PHONY: train test

train: $(VENV)/.installed-train
	$(VENV)/bin/python -m train

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q

# train needs the library and the demo data writers; test adds pytest, scipy, OpenCV, ...
$(VENV)/.installed-train: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --no-compile -e ".[$(DALI),demo]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-train
	$(VENV)/bin/python -m pip install -q --no-compile -e ".[$(DALI),demo,test]"
	touch $@
