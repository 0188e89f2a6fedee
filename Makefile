# Two commands do all set-up on a fresh machine: `make demo` (the kit's main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Where `make data` looks for the raw StatLib file when the cache is missing and the download fails.
CAL_HOUSING_RAW ?= $(wildcard ../shared/datasets/california_housing/cal_housing.data)
# The kit's tracking store: lessons opened with `make lab` and the UI of `make ui` share it.
KIT_TRACKING_URI := sqlite:///$(CURDIR)/lessons/mlflow.db
UI_PORT ?= 5000

.PHONY: demo test check lint format lab ui data venv system-deps clean

demo: venv data
	@bash scripts/system-deps.sh bubblewrap
	$(BIN)/python -m coursekit.demo

test: venv data system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# A student's self-check: the instructor's grader and rubric on one notebook (another: make check NOTEBOOK=PATH).
NOTEBOOK ?= homework/homework-195.ipynb
check: venv data
	$(BIN)/python -m grader check "$(NOTEBOOK)"

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lab: venv data
	cd lessons && MLFLOW_TRACKING_URI=$(KIT_TRACKING_URI) ../$(BIN)/jupyter lab

ui: venv
	MLFLOW_TRACKING_URI=$(KIT_TRACKING_URI) $(BIN)/python -m coursekit.ui --port $(UI_PORT)

data: venv
	$(BIN)/python -m coursekit.housing $(if $(CAL_HOUSING_RAW),--raw "$(CAL_HOUSING_RAW)")

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/uv pip install --quiet --compile-bytecode -r requirements.lock
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/uv pip install --quiet --no-deps -e .
	touch $@

# Debian packages some tests need (sandbox, browser). Installed when root; otherwise those tests skip and say why.
system-deps:
	@bash scripts/system-deps.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache lessons/mlflow.db lessons/mlruns

# Binder (repo2docker) installs binder/requirements.txt: the lock's pins, regenerated when the lock changes.
binder/requirements.txt: requirements.lock
	{ echo "# Generated from requirements.lock by 'make binder/requirements.txt': the kit's exact pins, for repo2docker."; cat requirements.lock; } > $@
