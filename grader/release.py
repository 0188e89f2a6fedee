"""Build the student edition of the kit: what students get, never what instructors keep.

``python -m grader release DIR [--binder-repo OWNER/NAME]`` (or ``make release RELEASE=DIR``) writes a
self-contained kit for a public repository: the lessons, each homework's student notebook and rubric, the data
provisioning, the grader (for the self-check), Binder's files and the student edition's own Makefile, README,
CI and tests (from ``student-edition/``). Never the solutions, their sources, the sample submissions or the
grader's own tests: only files named here are copied, and only files git tracks or would track.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[1]
EDITION = REPO / "student-edition"  # the files only the student edition has (README.md.j2 is rendered)
# Copied as they are: folders whole (what git tracks in them), files one by one.
SHARED = (
    ".github/workflows/continuous-training.yml",  # lesson 08's sample workflow: inert without its variable
    ".gitignore",
    "LICENSE",
    "SECURITY.md",
    "common.mk",
    "pyproject.toml",
    "requirements.in",
    "requirements.lock",
    "binder",
    "coursekit",
    "datasets",
    "grader",
    "lessons",
    "scripts",
    "tests/__init__.py",
    "tests/browser.py",
    "tests/notebooks.py",
    "tests/test_housing.py",
    "tests/test_lessons.py",
    "tests/test_notebook_harness.py",
    "tests/test_self_check.py",
    "tests/test_team.py",  # runs lesson 06, which tests/test_lessons.py leaves to it
)
KIT_ONLY = ("coursekit/demo.py", "grader/assign.py")  # the instructor's tools: sample grading, solution split
DEFAULT_BINDER_REPO = "mlflow-versioning-kit/mlflow-versioning-course"


def build(destination: Path, binder_repo: str = DEFAULT_BINDER_REPO) -> list[Path]:
    """Write the student edition into ``destination`` (emptied first); return the files written."""
    _refuse_to_overwrite_the_kit(destination.resolve())
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for relative in _shared_files():
        _copy(REPO / relative, destination / relative)
    for rubric in sorted((REPO / "homework").glob("*.rubric.toml")):
        student_notebook = rubric.with_name(rubric.name.removesuffix(".rubric.toml") + ".ipynb")
        for path in (rubric, student_notebook):
            _copy(path, destination / path.relative_to(REPO))
    for path in _tracked(EDITION):
        relative = path.relative_to(EDITION)
        if path.suffix == ".j2":
            rendered = jinja2.Template(path.read_text(), keep_trailing_newline=True).render(binder_repo=binder_repo)
            target = destination / relative.with_suffix("")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered)
        else:
            _copy(path, destination / relative)
    return sorted(path for path in destination.rglob("*") if path.is_file())


def _refuse_to_overwrite_the_kit(destination: Path) -> None:
    """The destination is emptied first: it must not hold the kit, nor be a folder of the kit git tracks."""
    if destination == REPO or destination in REPO.parents:
        raise ValueError(f"{destination} holds the kit itself: choose an empty or new folder")
    if destination.is_relative_to(REPO):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(destination)], cwd=REPO).returncode == 0
        if not ignored:
            raise ValueError(f"{destination} is part of the kit: choose a folder outside it, or release/")


def _shared_files() -> list[Path]:
    files = []
    for entry in SHARED:
        path = REPO / entry
        files += [file.relative_to(REPO) for file in (_tracked(path) if path.is_dir() else [path])]
    return [file for file in files if str(file) not in KIT_ONLY]


def _tracked(folder: Path) -> list[Path]:
    """The files git tracks under ``folder``, or would (new and not ignored): never what a run left there."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
        cwd=folder,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return sorted(folder / name for name in listed.split("\0") if name and (folder / name).is_file())


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
