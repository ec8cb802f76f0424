# dsjob — the front door. `make` (or `make help`) lists every target.
.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
ROWS ?= 1228

.PHONY: help setup run local-serve test test-unit test-integration lint typecheck format lock lock-check clean

help: ## List every target
	@if [ -t 1 ]; then on='\033[36m' off='\033[0m'; else on= off=; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %s%-18s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

setup: ## Create .venv from the locks (bootstraps uv with pip if missing)
	@scripts/setup-venv.sh

run: setup ## Run the job end to end against the embedded AWS (ROWS=N); outputs land in out/
	@$(VENV)/bin/dsjob local run --rows $(ROWS) --mirror out

local-serve: setup ## Keep the embedded AWS up and print the export line for other shells
	@$(VENV)/bin/dsjob local serve --rows $(ROWS)

test: setup ## The whole test suite (unit, integration, containers, infra, notebooks)
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup ## Unit tests only (fast, no network)
	@$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: setup ## Integration tests (moto server, CLI as a subprocess)
	@$(PY) -m pytest -m integration $(PYTEST_ARGS)

lint: setup ## ruff, hadolint, shellcheck, nbstripout check
	@scripts/lint.sh

typecheck: setup ## mypy --strict
	@$(PY) -m mypy

format: setup ## Format and auto-fix with ruff
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

lock: ## Recompile the requirements*.lock files from pyproject.toml
	@scripts/lock.sh

lock-check: ## Fail if a lock file is stale
	@scripts/lock.sh --check

clean: ## Remove caches and outputs (keeps .venv)
	@rm -rf .pytest_cache .mypy_cache .ruff_cache build dist out .dsjob

# Topic makefiles: images, dev experience, infrastructure, benchmarks.
include $(sort $(wildcard make/*.mk))
