"""The student edition: built from the kit, it holds no line of any solution, sets up from scratch on its own,
and its own tests pass there (its lessons run and its self-check grades a student's attempt)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grader import release
from grader.assign import BEGIN, END
from tests.test_self_check import self_check

REPO = Path(__file__).resolve().parents[1]
BINDER_REPO = "course-org/mlflow-course-2027"


def solution_lines() -> set[str]:
    """Every line of every solution block that says something: not a bare bracket, nor a line that students get on
    purpose (the lessons teach the same API, the task and the rubric's hints name the calls to make), nor a line
    of plain Python that the kit's own code also has."""
    public = [
        cell.source for path in (REPO / "lessons").glob("*.ipynb") for cell in nbformat.read(path, as_version=4).cells
    ]
    public += [path.read_text() for path in (REPO / "homework").glob("*.rubric.toml")]
    public += [path.read_text() for path in (REPO / "homework").glob("*.ipynb")]  # the student notebooks
    public += [path.read_text() for folder in ("grader", "coursekit") for path in (REPO / folder).rglob("*.py")]
    public_text = "\n".join(public)
    lines = set()
    for source in (REPO / "homework" / "src").glob("*.ipynb"):
        for cell in nbformat.read(source, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                marker = line.strip()
                if marker in (BEGIN, END):
                    inside = marker == BEGIN
                elif inside and len(marker) >= 20 and marker not in public_text:
                    lines.add(marker)
    return lines


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("edition") / "release"
    release.build(folder, BINDER_REPO)
    return folder


def test_the_edition_holds_no_line_of_any_solution(edition):
    secrets = solution_lines()
    assert len(secrets) >= 20, "the solution should have been found, to be looked for"
    leaks = []
    for path in edition.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            leaks += [(str(path.relative_to(edition)), line) for line in secrets if line in text]
    assert leaks == []


def test_the_edition_has_what_students_need_and_nothing_instructors_keep(edition):
    files = {str(path.relative_to(edition)) for path in edition.rglob("*") if path.is_file()}
    for needed in (
        "Makefile",
        "README.md",
        ".ci/run",
        "homework/homework-195.ipynb",
        "homework/homework-195.rubric.toml",
        "lessons/01_tracking.ipynb",
        "lessons/07_lineage.ipynb",
        "coursekit/lineage.py",
        "lessons/06_team_server.ipynb",
        "coursekit/team.py",
        "tests/test_team.py",
        "binder/postBuild",
        "grader/__main__.py",
        "coursekit/housing.py",
        "tests/test_self_check.py",
    ):
        assert needed in files
    kept_back = ("homework/solution/", "homework/src/", "homework/examples/", "tests/adversarial/", "benchmarks/")
    assert not [name for name in files if name.startswith(kept_back)]
    assert not [name for name in files if name.endswith(("mlflow.db", ".pyc")) or "/mlruns/" in name]
    assert f"mybinder.org/v2/gh/{BINDER_REPO}/main" in (edition / "README.md").read_text()


def test_the_editions_make_team_runs_the_team_server(edition):
    """Lesson 06's `make team` is in common.mk: the edition has the target, the module and the set-up script."""
    dry_run = subprocess.run(["make", "-n", "team", "TEAM_PORT=5050"], cwd=edition, capture_output=True, text=True)
    assert dry_run.returncode == 0, dry_run.stderr
    assert "bash scripts/system-deps.sh postgresql" in dry_run.stdout
    assert ".venv/bin/python -m coursekit.team run --port 5050" in dry_run.stdout
    assert (edition / "scripts" / "system-deps.sh").exists() and (edition / "coursekit" / "team.py").exists()


def test_release_refuses_to_empty_the_kit_or_its_tracked_folders():
    for destination in (REPO, REPO / "lessons", REPO.parent):
        with pytest.raises(ValueError):
            release.build(destination)


@pytest.mark.slow
def test_a_fresh_clone_of_the_edition_sets_up_and_passes_its_own_tests(edition, tmp_path):
    """As its CI would: a clean clone, `bash .ci/run`, nothing beside it but scikit-learn's data cache."""
    git = ["git", "-c", "user.name=kit", "-c", "user.email=kit@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=edition, check=True)
    subprocess.run([*git, "add", "-A"], cwd=edition, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Student edition"], cwd=edition, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(edition), str(clone)], check=True)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTEST"))}
    environment.update(CI="true", PYTHON=sys.base_prefix + "/bin/python3")
    completed = subprocess.run(
        ["bash", ".ci/run"], cwd=clone, env=environment, capture_output=True, text=True, timeout=1800
    )
    assert completed.returncode == 0, (completed.stdout[-3000:], completed.stderr[-3000:])
    assert " passed" in completed.stdout and " failed" not in completed.stdout


@pytest.mark.slow
def test_the_self_check_gives_the_reference_solution_every_point(tmp_path):
    checked = self_check(REPO / "homework" / "solution" / "homework-195.ipynb", tmp_path)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "Score: 16 / 16 (self-check)" in checked.stderr
