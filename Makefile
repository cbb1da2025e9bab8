# Two commands on a fresh machine:  `make demo` (index the bundled sample into ./storage, run searches)
# and `make test` (the offline test suite). Both create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: setup demo test test-all lab bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build; a bare `torch` would pull GBs of CUDA packages
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/rag demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[notebooks]'
	# Jupyter refuses to start as root unless told to (containers often run as root).
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(BIN)/python bench/stores.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/query.py

clean:
	rm -rf $(VENV) storage storage-demo .pytest_cache
