# The two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models

.PHONY: install triton-venv run test lint build-models bench bench-tf bench-triton bench-peers clean

install: $(STAMP) triton-venv

# Bytecode is compiled once (~30 s; a few packages ship files that don't compile, hence
# `|| true`), whatever PYTHONDONTWRITEBYTECODE says: every server start then imports kserve
# in 1.5 s instead of 4 and TensorFlow in 4 s instead of 12.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,tensorflow,triton]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages >/dev/null || true
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

bench-tf: install
	$(BIN)/python loadtests/bench_tensorflow.py --markdown

bench-triton: install
	$(BIN)/python loadtests/bench_triton.py --markdown

bench-peers: install
	$(BIN)/python loadtests/bench_peers.py --markdown

clean:
	rm -rf $(VENV) .venv-mlserver .venv-triton $(MODELS) .pytest_cache .mypy_cache loadtests/reports

# Triton's own venv: the nvidia-pytriton wheel (the real tritonserver) pins numpy<2, which the
# main venv cannot take (TensorFlow needs numpy 2). Its python-backend stub also runs the
# models in this venv's Python, hence onnxruntime here.
triton-venv: .venv-triton/.installed

.venv-triton/.installed: $(STAMP)
	test -x .venv-triton/bin/python || $(PYTHON) -m venv .venv-triton
	$(BIN)/uv pip install -q --compile-bytecode --python .venv-triton/bin/python \
		'nvidia-pytriton==0.7.0' onnxruntime 'numpy<2'
	touch .venv-triton/.installed
