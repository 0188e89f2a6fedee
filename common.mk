# What the kit and its student edition share: set-up (venv, data, system packages), JupyterLab, the MLflow UI,
# the self-check and lint. Each one's Makefile includes this file and adds its two commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Where `make data` looks for the raw StatLib file when the cache is missing and the download fails.
CAL_HOUSING_RAW ?= $(wildcard ../shared/datasets/california_housing/cal_housing.data)
# The lessons' tracking store, which `make ui` opens. Notebooks need no setting for it: Jupyter starts each kernel in
# its notebook's folder, where MLflow's default `sqlite:///mlflow.db` is lessons/mlflow.db (homework/mlflow.db for the
# homework, which the grader reads).
KIT_TRACKING_URI := sqlite:///$(CURDIR)/lessons/mlflow.db
UI_PORT ?= 5000
# Jupyter refuses to start as root without --allow-root; containers and many teaching VMs run as root.
JUPYTER_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
# The notebook `make check` checks (another: make check NOTEBOOK=PATH).
NOTEBOOK ?= homework/homework-195.ipynb

.PHONY: check lint lab ui team data venv system-deps clean

# A student's self-check: the instructor's grader and rubric on one notebook.
check: venv data
	$(BIN)/python -m grader check "$(NOTEBOOK)"

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# JupyterLab on the whole kit (lessons/ and homework/), opened on lesson 01. MLFLOW_TRACKING_URI is removed, not set:
# with it, the homework too would log to the lessons' store instead of its own homework/mlflow.db.
lab: venv data
	env -u MLFLOW_TRACKING_URI -u MLFLOW_REGISTRY_URI $(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/lessons/01_tracking.ipynb $(JUPYTER_ROOT_FLAG)

ui: venv
	MLFLOW_TRACKING_URI=$(KIT_TRACKING_URI) $(BIN)/python -m coursekit.ui --port $(UI_PORT)

# Lesson 06's team server in the foreground: PostgreSQL, SeaweedFS (S3) and `mlflow server` with basic-auth, on
# free loopback ports (TEAM_PORT=5050 fixes MLflow's; TEAM_HOME=DIR another folder for its data); Ctrl-C stops all
# three. It prints the URL and the passwords.
team: venv
	@bash scripts/system-deps.sh postgresql
	$(BIN)/python -m coursekit.team run $(if $(TEAM_PORT),--port $(TEAM_PORT)) $(if $(TEAM_HOME),--home "$(TEAM_HOME)")

data: venv
	$(BIN)/python -m coursekit.housing $(if $(CAL_HOUSING_RAW),--raw "$(CAL_HOUSING_RAW)")

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/uv pip install --quiet --compile-bytecode -r requirements.lock
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/uv pip install --quiet --no-deps -e .
	touch $@

# Debian packages: bubblewrap (the grader's sandbox) and chromium (browser tests). Installed when root; otherwise
# what needs them is skipped and says why.
system-deps:
	@bash scripts/system-deps.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache lessons/mlflow.db lessons/mlruns homework/mlflow.db homework/mlruns
