# The two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models

.PHONY: install triton-venv browser kube promtool images base-image run test test-fast lint build-models bench bench-tf bench-triton bench-peers bench-perf-analyzer bench-reuseport clean

install: $(STAMP) triton-venv browser

# Bytecode is compiled once (~30 s; a few packages ship files that don't compile, hence
# `|| true`), whatever PYTHONDONTWRITEBYTECODE says: every server start then imports kserve
# in 1.5 s instead of 4 and TensorFlow in 4 s instead of 12.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,sklearn,storage,triton-client,tensorflow,triton,xgboost,lightgbm]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages >/dev/null || true
	touch $(STAMP)

build-models: install
	$(BIN)/modelserve build-models --out $(MODELS)

run: build-models
	$(BIN)/modelserve up

lint: install
	$(BIN)/ruff check servers gateway demos tests loadtests tools
	$(BIN)/mypy
	$(BIN)/mypy tools/images.py

# perf_analyzer (tests/e2e/test_perf_analyzer.py), kube-apiserver (tests/e2e/test_kubectl_*)
# and promtool (tests/gateway/slo_alerts/) are installed first. perf_analyzer: ~1 min on a fresh
# machine, then cached under ~/.cache/modelserve-perf-analyzer.
# The image tier (tests/images) runs where images can be built: a Docker daemon, or buildah
# (installed from Debian when missing and we are root); `make images` first, then pytest with
# MODELSERVE_IMAGE_TIER=1, so a missing image fails instead of skipping.
test: lint kube promtool
	@TIER=0; if BUILDER="$$(tools/container-tools.sh)"; then \
		$(PYTHON) tools/images.py --builder "$$BUILDER" --prune || exit 1; TIER=1; \
	else echo "make: no Docker daemon and no buildah: the image tier (tests/images) will be skipped"; fi; \
	PERF_ANALYZER="$$(tools/perf-analyzer.sh)" && PROMTOOL="$$(tools/promtool.sh)" && \
		MODELSERVE_PERF_ANALYZER="$$PERF_ANALYZER" MODELSERVE_PROMTOOL="$$PROMTOOL" \
		MODELSERVE_IMAGE_TIER=$$TIER $(BIN)/pytest

# The inner loop: the tests that start no process and train no model (tests/conftest.py marks
# the others `slow`); `make test` still runs everything.
test-fast: install
	$(BIN)/pytest -q -m "not slow"

# Every Dockerfile target under the name the manifests use (tools/images.py): docker build
# where a daemon answers, else Debian's buildah (installed when missing; root), layers cached in
# the local store. On a fresh machine here: 3 min for all four and 5.5 GB of store (overlay).
images:
	$(PYTHON) tools/images.py --prune

# The Dockerfile's base where no registry answers: a debootstrap stand-in under its name (~1 min).
base-image:
	tools/base-image.sh

bench: install
	$(BIN)/python loadtests/bench_sklearn.py

bench-tf: install
	$(BIN)/python loadtests/bench_tensorflow.py --markdown

bench-triton: install
	$(BIN)/python loadtests/bench_triton.py --markdown

bench-peers: install
	$(BIN)/python loadtests/bench_peers.py --markdown

# Triton's own perf_analyzer (2.60, installed once into ~/.cache by tools/perf-analyzer.sh:
# the wheel and Debian trixie's libc from the package mirrors, ~1 min) against triton-digits
# through the gateway, directly and (gRPC) through a bare grpc.aio proxy, in one run.
bench-perf-analyzer: install
	$(BIN)/python loadtests/bench_perf_analyzer.py --perf-analyzer "$$(tools/perf-analyzer.sh)" --floor

# One data-plane process against several on one SO_REUSEPORT port, in front of one tritonserver
# (what more gateway processes would buy; `--processes 1 2 4` on a bigger machine).
bench-reuseport: install
	$(BIN)/python loadtests/bench_reuseport.py --perf-analyzer "$$(tools/perf-analyzer.sh)"

clean:
	rm -rf $(VENV) .venv-mlserver .venv-triton $(MODELS) .pytest_cache .mypy_cache loadtest-reports

# The dashboard's browser tests drive Debian's chromium through Playwright (whose own browser
# download does not work here): installed when missing if we are root or may sudo; otherwise,
# or if apt-get fails, a note says why those tests will be skipped.
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
NO_BROWSER := the browser tests (tests/e2e/test_dashboard_browser.py) will be skipped
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		$(APT_CHROMIUM) || echo "make: installing chromium failed: $(NO_BROWSER)"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo sh -c '$(APT_CHROMIUM)' || echo "make: installing chromium failed: $(NO_BROWSER)"; \
	else echo "make: /usr/bin/chromium is missing and apt-get needs root or sudo: $(NO_BROWSER)"; fi

# Triton's own venv: the nvidia-pytriton wheel (the real tritonserver) pins numpy<2, which the
# main venv cannot take (TensorFlow needs numpy 2). Its python-backend stub also runs the
# models in this venv's Python, hence onnxruntime here.
triton-venv: .venv-triton/.installed

.venv-triton/.installed: $(STAMP)
	test -x .venv-triton/bin/python || $(PYTHON) -m venv .venv-triton
	$(BIN)/uv pip install -q --compile-bytecode --python .venv-triton/bin/python \
		'nvidia-pytriton==0.7.0' onnxruntime 'numpy<2'
	touch .venv-triton/.installed

# A real kube-apiserver (1.20.2, Debian bookworm's source package, Debian's Go 1.19) and
# Debian's etcd, for `modelserve up --kube-local` and the kubectl tests: built once into
# ~/.cache/modelserve-kube by tools/kube-apiserver.sh (~8 min and a 278 MB download on a
# fresh 2-core machine; apt-get needs root or sudo), then copied into .kube/bin. Where it cannot
# be built, the kubectl tests are skipped with one line saying why.
KUBE_BIN := .kube/bin/kube-apiserver
kube: $(KUBE_BIN)

$(KUBE_BIN): tools/kube-apiserver.sh
	@mkdir -p .kube/bin && chmod 700 .kube
	@if D="$$(tools/kube-apiserver.sh)"; then cp "$$D/kube-apiserver" "$$D/etcd" .kube/bin/; \
	else echo "make: kube-apiserver could not be built (see above): the kubectl tests will be skipped"; fi

# Prometheus's promtool (2.42, Debian bookworm's `prometheus` package) for `promtool check rules`
# and `promtool test rules` on the SLO alerts, without a Prometheus server and without root:
# tools/promtool.sh fetches the .deb with a private apt state and unpacks only promtool into
# ~/.cache/modelserve-promtool (~6 s and a 19 MB package on a fresh machine, measured here;
# instant once cached). Prints its path.
promtool:
	@tools/promtool.sh
