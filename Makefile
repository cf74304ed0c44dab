# The README's commands. Everything runs from a venv that `make` creates on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: the gateway on the embedded default (deploy/examples/local), API on :8080, metrics on :9464
run: $(STAMP)
	$(BIN)/kubellm-gateway --manifests deploy/examples/local --host 127.0.0.1 --port 8080

## test: lint, types, then the whole suite (pytest's "no tests ran" is a failure here)
test: lint
	$(BIN)/pytest -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: gateway vs bare proxy vs direct, side by side (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
