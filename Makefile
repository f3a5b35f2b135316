# Single entry point. Every README command and .ci/run call these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1
# Never let a local run or a test reach a real AWS endpoint by accident.
export AWS_EC2_METADATA_DISABLED := true

IMAGES ?= demo-images
OUT ?= demo-out
STACK ?= ImageCaptioning
PYTEST_ARGS ?=

.PHONY: help setup demo test test-unit test-integration test-infra test-e2e lint format \
        bench bench-quota demo-batch bench-report browser fuzz synth deploy destroy smoke clean

help: ## list the targets with what each does
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml package.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP) ## create .venv, install Python and npm dependencies (idempotent)

demo: setup ## generate sample images and run the whole pipeline locally
	$(PY) -m imgcap.samples --out $(IMAGES)
	$(VENV)/bin/imgcap local --images $(IMAGES) --out $(OUT)

test: setup browser ## the full test suite (unit, integration, infra, end to end)
	$(PY) -m pytest -n 3 --dist loadfile $(PYTEST_ARGS)

# Headless Chromium for the report's browser test (tests/e2e/test_report_browser.py): Debian's
# package, installed only when missing. Without root (a developer's machine) it says how and goes
# on, and that test skips; under CI=true the test fails instead when there is still no browser.
browser: ## install Debian's chromium if it is missing (for the report's browser test)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq </dev/null >/dev/null && apt-get install -y -qq chromium </dev/null >/dev/null; \
	else echo "chromium is missing: sudo apt-get install chromium (the browser test skips without it)"; fi

test-unit: setup ## unit tests only (pure functions, no sockets)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup ## integration tests (moto, the local loopback servers)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-infra: setup ## CDK synth, cdk-nag and cfn-lint tests
	$(PY) -m pytest tests/infra $(PYTEST_ARGS)

test-e2e: setup ## end-to-end tests on the local runtime
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy lambdas imgcap infra app.py

format: setup ## ruff format and ruff check --fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup ## resize/encode benchmark against the notebook's code
	$(PY) -m bench.bench_image

bench-quota: setup ## caption throughput at the quota on the local runtime
	$(PY) -m bench.bench_quota

demo-batch: setup ## a backfill on the local runtime: --mode batch on 300 images, clean and with batch faults
	$(PY) -m bench.batch_local

bench-report: setup browser ## report load time in headless Chromium, ~300 and 5,000 entries
	$(PY) -m bench.bench_report

fuzz: setup ## bounded fuzzing of the decode path (not part of make test)
	$(PY) -m bench.fuzz_decode

synth: setup ## cdk synth offline, with cdk-nag, then cfn-lint
	npx cdk synth --quiet
	$(VENV)/bin/cfn-lint cdk.out/$(STACK).template.json

deploy: setup ## cdk deploy (needs AWS credentials; see README)
	npx cdk deploy $(STACK) $(CDK_ARGS)

destroy: setup ## cdk destroy (data is retained unless deployed with destroyOnRemoval)
	npx cdk destroy $(STACK) $(CDK_ARGS)

smoke: setup ## end-to-end check of a deployed stack: make smoke STACK=name (2 paid model calls)
	$(VENV)/bin/imgcap smoke --stack-name $(STACK)

clean: ## remove build output, demo output and tool caches
	rm -rf cdk.out $(OUT) $(IMAGES) .pytest_cache .mypy_cache .ruff_cache build
