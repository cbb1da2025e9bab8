# Two commands on a fresh machine:  `make demo` (index the bundled sample into ./storage, run searches)
# and `make test` (the offline test suite); `make serve` then serves that index as a web page and
# an HTTP API. All create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: setup demo serve test test-all lab bench clean

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

# The page at http://127.0.0.1:8765/ over the demo's index (same models or stand-ins); Ctrl-C
# stops it. More options: make serve ARGS='--port 9000 --allow-ingest data'
serve: $(STAMP)
	$(BIN)/rag serve --demo $(ARGS)

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
