# rnnexp developer commands. `make` or `make help` lists them.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_VERSION := 2.13.0

.DEFAULT_GOAL := help
.PHONY: help install test test-full lint format bench tb clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Install torch==2.13.0 (CPU wheel), then rnnexp in editable mode with dev extras
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]"

test: ## Fast test suite (< 10 min on 2 cores); slow tests are skipped
	$(PYTHON) -m pytest -m "not slow" -q

test-full: ## Every test, including slow ones (wheel install, longer training)
	$(PYTHON) -m pytest -q

lint: ## ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: ## Apply ruff fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

bench: ## Benchmarks: runner overhead and cell speed (quick); figures in bench/README.md
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/cells.py --quick

tb: ## TensorBoard on outputs/
	$(PYTHON) -m tensorboard.main --logdir outputs

clean: ## Remove build artefacts and caches (not outputs/)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
