"""Find the students in a submissions folder and copy each one's notebook into a fresh working directory.

A student hands in ``NAME.ipynb``, a folder ``NAME/`` holding the notebook (plus files it reads), or
``NAME.zip`` of such a folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.archive import UnsafeArchive, extract_zip
from grader.rubric import Rubric

SUBMISSION_SUFFIXES = (".ipynb", ".zip")


class Rejected(Exception):
    """The submission cannot be executed; ``status`` is its gradebook status."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path


def find_submissions(folder: Path) -> list[Submission]:
    """Every submission in ``folder``, sorted by student name; hidden entries and other files are not ones."""
    entries = [
        entry
        for entry in folder.iterdir()
        if not entry.name.startswith(".") and (entry.is_dir() or entry.suffix.lower() in SUBMISSION_SUFFIXES)
    ]
    stems = [student_name(entry) for entry in entries]
    # Two entries for one name (alice.ipynb and alice.zip) stay apart under their full file names.
    submissions = [
        Submission(entry.name if stems.count(stem) > 1 else stem, entry)
        for entry, stem in zip(entries, stems, strict=True)
    ]
    return sorted(submissions, key=lambda submission: submission.student)


def student_name(entry: Path) -> str:
    return entry.name if entry.is_dir() else entry.stem


def stage(submission: Path, workdir: Path, rubric: Rubric) -> Path:
    """Copy the submission into ``workdir`` (which must be empty) and return the notebook to execute there."""
    if submission.is_dir():
        _copy_folder(submission, workdir)
        return _only_notebook(workdir, rubric)
    if submission.suffix.lower() == ".zip":
        try:
            extract_zip(submission, workdir, rubric.archive_bytes, rubric.archive_members)
        except UnsafeArchive as error:
            raise Rejected("unsafe_archive", f"the zip was refused: {error.reason}") from error
        return _only_notebook(workdir, rubric)
    notebook = workdir / submission.name
    shutil.copyfile(submission, notebook)
    return notebook


def read_notebook(path: Path) -> nbformat.NotebookNode:
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except (ValueError, nbformat.ValidationError, UnicodeDecodeError) as error:  # NotJSONError is a ValueError
        raise Rejected("invalid_notebook", f"{path.name} is not a valid notebook: {str(error)[:300]}") from error
    return notebook


def _copy_folder(source: Path, workdir: Path) -> None:
    # Symbolic links are left behind: one could point anywhere on the grading machine.
    shutil.copytree(
        source,
        workdir,
        symlinks=True,
        dirs_exist_ok=True,
        ignore=lambda folder, names: [name for name in names if (Path(folder) / name).is_symlink()],
    )


def _only_notebook(workdir: Path, rubric: Rubric) -> Path:
    """The notebook at the top of ``workdir``: the only one there, else the one named after the homework."""
    _lift_single_folder(workdir)
    notebooks = sorted(path for path in workdir.glob("*.ipynb") if path.is_file())
    if len(notebooks) == 1:
        return notebooks[0]
    expected = workdir / f"{rubric.homework}.ipynb"
    if expected in notebooks:
        return expected
    found = ", ".join(path.name for path in notebooks) or "none"
    raise Rejected(
        "missing_notebook",
        f"expected one notebook (or {expected.name}) at the top of the submission; found: {found}",
    )


def _lift_single_folder(workdir: Path) -> None:
    """A zip of the folder itself, rather than of its contents: move that folder's contents up."""
    children = [child for child in workdir.iterdir() if child.name != "__MACOSX"]
    if len(children) != 1 or not children[0].is_dir() or children[0].is_symlink():
        return
    folder = children[0].rename(workdir / ".submission-folder")  # its contents may hold its own name
    for child in folder.iterdir():
        child.rename(workdir / child.name)
    folder.rmdir()
