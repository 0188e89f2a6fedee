# Two commands do all set-up on a fresh machine: `make demo` (the kit's main job) and `make test`.
# Set-up, `make lab`, `make ui`, `make check` and `make lint` are in common.mk, shared with the student edition.
include common.mk
# Where `make release` writes the student edition (another: make release RELEASE=DIR BINDER_REPO=OWNER/NAME).
RELEASE ?= release
BINDER_REPO ?=

.DEFAULT_GOAL := demo
.PHONY: demo test release

demo: venv data
	@bash scripts/system-deps.sh bubblewrap
	$(BIN)/python -m coursekit.demo

test: venv data system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

release: venv
	$(BIN)/python -m grader release "$(RELEASE)" $(if $(BINDER_REPO),--binder-repo "$(BINDER_REPO)")

# Binder (repo2docker) installs binder/requirements.txt: the lock's pins, regenerated when the lock changes.
binder/requirements.txt: requirements.lock
	{ echo "# Generated from requirements.lock by 'make binder/requirements.txt': the kit's exact pins, for repo2docker."; cat requirements.lock; } > $@
