# rayformers: the few commands a newcomer needs. `make test` and `make quickstart` do their own setup.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch pin. On this project's CPU machines pip finds the CPU build of this pin on local disk;
# elsewhere the same line takes PyPI's default (CUDA) build. TORCH_INDEX picks another build, e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cu128.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
STAMP := $(VENV)/.rayformers-installed

.PHONY: setup test test-fast lint format quickstart bench k8s-validate clean

setup: $(STAMP)

# Torch first, alone: any unpinned resolution of torch by another package would pull a new CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX_ARG)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The whole suite: what CI (.ci/run) runs. Real Ray Train runs and Serve deployments; see README for its time.
test: setup lint
	$(BIN)/python -m pytest tests

# The inner loop: lint and every test that starts no Ray (unit tests, CLI checks without Ray).
test-fast: setup lint
	$(BIN)/python -m pytest tests -m "not slow"

# The whole flow offline on the project's own data: tokenizer, LoRA on 2 Ray Train workers, Serve, HTTP.
quickstart: setup
	$(BIN)/rayformers quickstart

# Serving speed against the servers a user would otherwise run, side by side (about 13 minutes here):
# writes benchmarks/results/<name>.{json,md,png}. One benchmark: `$(BIN)/python -m benchmarks.run classifier`.
bench: setup
	$(BIN)/python -m benchmarks.run

# Render k8s/base and every k8s/overlays/* with kubectl (kustomize v5) and validate each object offline:
# KubeRay kinds against the CRDs vendored in k8s/crds ($KUBERAY_CRDS overrides), unknown fields rejected;
# core kinds against Kubernetes' schemas; the run config and the Serve config with the project's own models.
k8s-validate: setup
	$(BIN)/python k8s/validate.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
