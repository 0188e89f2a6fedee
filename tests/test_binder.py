"""Binder, as far as a machine without Docker can check it: what repo2docker would install and run.

A fresh environment gets binder/requirements.txt; a copy of the repository stands in for the image's $HOME;
binder/postBuild provisions it offline (the download fails, $CAL_HOUSING_RAW is the fallback); every command
then runs through binder/start, as a Binder session's do. The proxied MLflow UI itself: tests/test_ui.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient

from tests.notebooks import REPO

BINDER = REPO / "binder"
SHARED_RAW = REPO.parent / "shared" / "datasets" / "california_housing" / "cal_housing.data"
FIRST_LESSON = REPO / "lessons" / "01_tracking.ipynb"
# What repo2docker would not copy into the image either: local environments, caches and run output.
NOT_IN_IMAGE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", ".*_cache", "mlflow.db", "mlruns", "mlartifacts", "*.pkz",
    "test-artifacts", "gradebook", "out",
)  # fmt: skip


def pins(path: Path) -> dict[str, str]:
    requirements = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(requirement.split("==") for requirement in requirements if requirement)


def test_requirements_are_the_lock():
    assert pins(BINDER / "requirements.txt") == pins(REPO / "requirements.lock"), "run `make binder/requirements.txt`"


def test_runtime_is_the_python_ci_tests():
    assert (BINDER / "runtime.txt").read_text().strip() == f"python-{sys.version_info.major}.{sys.version_info.minor}"


def test_scripts_stop_on_errors_and_start_hands_over():
    post_build = (BINDER / "postBuild").read_text().splitlines()
    start = (BINDER / "start").read_text().strip().splitlines()
    assert post_build[0].startswith("#!") and post_build[1].startswith("set -e")
    assert start[-1] == 'exec "$@"'
    assert all(os.access(BINDER / name, os.X_OK) for name in ("postBuild", "start"))


@dataclass
class Binder:
    home: Path  # the repository's copy, which is also $HOME, as in a Binder image
    venv: Path  # the image's Python environment
    env: dict[str, str]

    @property
    def store(self) -> str:
        return f"sqlite:///{self.home / 'lessons' / 'mlflow.db'}"

    def run(self, *command: str, cwd: Path | None = None, timeout: float = 300) -> str:
        """Run ``command`` the way a Binder session does, through binder/start; return its output."""
        result = subprocess.run(
            [str(self.home / "binder" / "start"), *command],
            cwd=cwd or self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout


@pytest.fixture(scope="module")
def binder(tmp_path_factory) -> Binder:
    if not SHARED_RAW.is_file():
        pytest.skip(f"no local StatLib copy at {SHARED_RAW}: Binder's set-up cannot get the data offline")
    root = tmp_path_factory.mktemp("binder")
    venv, home = root / "venv", root / "home"
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([uv, "venv", "--quiet", "--seed", "--python", sys.executable, venv], check=True)
    install = [uv, "pip", "install", "--quiet", "-r", BINDER / "requirements.txt"]
    subprocess.run(install, env={**os.environ, "VIRTUAL_ENV": str(venv)}, check=True, timeout=300)
    shutil.copytree(REPO, home, ignore=NOT_IN_IMAGE)
    env = {
        "HOME": str(home),
        "REPO_DIR": str(home),
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CAL_HOUSING_RAW": str(SHARED_RAW),
    }
    result = subprocess.run(["binder/postBuild"], cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"postBuild failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "California Housing: " in result.stdout
    return Binder(home, venv, env)


def test_post_build_provisions_data_and_store_in_home(binder):
    assert (binder.home / "scikit_learn_data" / "cal_housing_py3.pkz").is_file()
    assert [experiment.name for experiment in MlflowClient(binder.store).search_experiments()] == ["Default"]


def test_start_sets_no_store_so_each_notebook_logs_beside_itself(binder):
    """The homework must log to homework/mlflow.db, which the self-check reads; lessons to lessons/mlflow.db."""
    printed = binder.run("python", "-c", "import os; print(os.environ.get('MLFLOW_TRACKING_URI', 'unset'))")
    assert printed.strip() == "unset"


def first_cells(lesson) -> list:
    """The lesson's code cells up to its first tracked run: imports, data, the tracking store, one run."""
    code_cells = [cell for cell in lesson.cells if cell.cell_type == "code"]
    first_run = next(index for index, cell in enumerate(code_cells) if "mlflow.start_run(" in cell.source)
    return code_cells[: first_run + 1]


def test_first_lesson_cells_run_in_the_binder_environment(binder):
    lesson = nbformat.read(FIRST_LESSON, as_version=4)
    check = nbformat.v4.new_code_cell(
        "import sys\n"
        f"assert sys.prefix == {str(binder.venv)!r}, sys.prefix\n"
        # MLflow's default store, made absolute: the lessons' folder's mlflow.db, which the proxied UI reads.
        f"assert mlflow.get_tracking_uri() == {binder.store!r}, mlflow.get_tracking_uri()\n"
        "assert mlflow.get_run(run.info.run_id).data.metrics['rmse_test'] > 0\n"
        "assert len(X_train) + len(X_test) == 20640\n"
    )
    lesson.cells = [*first_cells(lesson), check]
    notebook = binder.home / "lessons" / "first_cells.ipynb"
    nbformat.write(lesson, notebook)
    binder.run("jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace", notebook.name, cwd=notebook.parent)


def test_jupyter_loads_the_proxy_config(binder):
    """postBuild put the config where the environment's Jupyter reads it; it names the lessons' store."""
    config = json.loads(binder.run("jupyter", "server", "--show-config-json"))
    command = config["ServerProxy"]["servers"]["mlflow"]["command"]
    assert command[:4] == [str(binder.venv / "bin" / "python"), "-m", "mlflow", "server"]
    assert command[command.index("--backend-store-uri") + 1] == binder.store
    assert config["ServerApp"]["default_url"] == "/lab/tree/lessons"


def test_the_team_servers_programs_come_with_the_image(binder):
    """Lesson 06: repo2docker installs apt.txt's PostgreSQL; SeaweedFS's `weed` comes in requirements.txt's wheel."""
    apt_packages = [line.split("#")[0].strip() for line in (BINDER / "apt.txt").read_text().splitlines()]
    assert "postgresql" in apt_packages
    found = binder.run("python", "-c", "from coursekit import team; print(team.weed_program())")
    assert found.strip() == str(binder.venv / "bin" / "weed")
