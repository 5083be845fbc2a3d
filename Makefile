# The two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models

.PHONY: install run test lint build-models bench bench-peers clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,tensorflow]'
	touch $(STAMP)

build-models: install
	$(BIN)/modelserve build-models --out $(MODELS)

run: build-models
	$(BIN)/modelserve up

lint: install
	$(BIN)/ruff check servers gateway tests loadtests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python loadtests/bench_sklearn.py

bench-peers: install
	$(BIN)/python loadtests/bench_peers.py --markdown

clean:
	rm -rf $(VENV) .venv-mlserver $(MODELS) .pytest_cache .mypy_cache loadtests/reports
