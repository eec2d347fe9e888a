# rnnexp developer commands. `make` or `make help` lists them.
#
# `make run` and `make test` install into a virtual environment, .venv, when it is missing
# or older than pyproject.toml: torch==2.13.0 first (the CPU wheel), then rnnexp in
# editable mode with its dev extras. Nothing goes into the system Python unless you ask for
# it with `make install` (for those who manage their own environment; it uses python3).
SYSTEM_PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION := 2.13.0
INSTALLED := $(VENV)/.installed
PYTHON := $(VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help venv run install test test-full lint format bench tb clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	touch $(INSTALLED)

venv: $(INSTALLED) ## Create .venv and install torch==2.13.0 (CPU) and rnnexp -e .[dev] into it

run: $(INSTALLED) ## The main job: rnnexp train cell=gru task=timer, in .venv (installed if needed)
	$(VENV)/bin/rnnexp train cell=gru task=timer

install: ## Into python3 itself (no .venv): torch==2.13.0 (CPU wheel), then rnnexp -e .[dev]
	$(SYSTEM_PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(SYSTEM_PYTHON) -m pip install -e ".[dev]"

test: $(INSTALLED) ## Fast test suite (< 10 min on 2 cores), in .venv; slow tests are skipped
	$(PYTHON) -m pytest -m "not slow" -q

test-full: $(INSTALLED) ## Every test, including slow ones (wheel install, longer training)
	$(PYTHON) -m pytest -q

lint: $(INSTALLED) ## ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED) ## Apply ruff fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

bench: $(INSTALLED) ## Benchmarks: runner overhead, cell speed and small nets (quick); figures in bench/README.md
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/cells.py --quick
	$(PYTHON) bench/small_nets.py --quick

tb: $(INSTALLED) ## TensorBoard on outputs/
	$(PYTHON) -m tensorboard.main --logdir outputs

clean: ## Remove build artefacts and caches (not outputs/, not .venv)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
