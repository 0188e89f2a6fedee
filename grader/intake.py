"""Find the students in a submissions folder and copy each one's notebook into a fresh working directory.

A student hands in ``NAME.ipynb``, a folder ``NAME/`` holding the notebook (plus files it reads), or
``NAME.zip`` of such a folder. Sizes are checked before anything is copied or parsed, nothing is read through a
link, and the notebook is normalised the way Jupyter opens it before it is validated.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.corpus.words import generate_corpus_id
from nbformat.reader import reads as parse_notebook
from nbformat.validator import normalize

from grader.archive import MAX_DEPTH, UnsafeArchive, extract_zip
from grader.rubric import Rubric

SUBMISSION_SUFFIXES = (".ipynb", ".zip")
CHUNK_BYTES = 1024 * 1024
CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # nbformat 4.5's cell id
MESSAGE_CHARS = 500


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
    # Two entries for one name (alice.ipynb and alice.zip) stay apart under their full file names; so does one
    # whose name is another's full file name (alice.zip.ipynb beside those two). Full names are unique in a folder,
    # so this ends.
    names = [student_name(entry) for entry in entries]
    while len(set(names)) < len(names):
        names = [entry.name if names.count(name) > 1 else name for entry, name in zip(entries, names, strict=True)]
    submissions = [Submission(name, entry) for entry, name in zip(entries, names, strict=True)]
    return sorted(submissions, key=lambda submission: submission.student)


def student_name(entry: Path) -> str:
    return entry.name if entry.is_dir() else entry.stem


def stage(submission: Path, workdir: Path, rubric: Rubric) -> Path:
    """Copy the submission into ``workdir`` (which must be empty) and return the notebook to execute there."""
    try:
        return _stage(submission, workdir, rubric)
    except OSError as error:  # unreadable, vanished, a name the disk refuses: this submission's, not the batch's
        raise Rejected("error", f"the submission could not be copied: {_os_problem(error)}") from error


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook ``stage`` returned, normalised and validated; refused only if Jupyter could not run it."""
    try:
        notebook = nbformat.convert(parse_notebook(path.read_text(encoding="utf-8")), 4)
        notebook = _normalised(notebook)
    except Exception as error:  # not JSON, an unknown version, JSON nested too deep: nothing Jupyter opens
        problem = f"{type(error).__name__}: {error}"
        raise Rejected("invalid_notebook", f"{path.name} is not a valid notebook: {problem}"[:MESSAGE_CHARS]) from error
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        where = "/".join(map(str, getattr(error, "absolute_path", ()))) or "the notebook"
        problem = f"{where}: {getattr(error, 'message', error)}"
        raise Rejected("invalid_notebook", f"{path.name} cannot be run: {problem}"[:MESSAGE_CHARS]) from error
    return notebook


def _stage(submission: Path, workdir: Path, rubric: Rubric) -> Path:
    mode = submission.lstat().st_mode
    if stat.S_ISLNK(mode):  # it could point anywhere on the grading machine
        raise Rejected(
            "missing_notebook",
            f"{submission.name} is a symbolic link, which the grader does not follow: hand in the "
            "file or folder itself",
        )
    if stat.S_ISDIR(mode):
        _copy_folder(submission, workdir, rubric)
        return _only_notebook(workdir, rubric)
    if not stat.S_ISREG(mode):
        raise Rejected("invalid_notebook", f"{submission.name} is not a regular file")
    if submission.suffix.lower() == ".zip":
        _check_size(f"the zip {submission.name}", submission.lstat().st_size, rubric.submission_bytes)
        try:
            extract_zip(submission, workdir, rubric.archive_bytes, rubric.archive_members)
        except UnsafeArchive as error:
            raise Rejected("unsafe_archive", f"the zip was refused: {error.reason}") from error
        return _only_notebook(workdir, rubric)
    _check_size(f"the notebook {submission.name}", submission.lstat().st_size, rubric.notebook_bytes)
    notebook = workdir / submission.name
    _copy_file(submission, notebook, rubric.notebook_bytes)
    return notebook


def _normalised(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What Jupyter accepts when it opens a notebook, made valid: the current minor version (a 4.4 notebook that
    keeps its cells' ids is what some tools write), a unique valid id on every cell, no metadata the format
    forbids. And nothing saved by an earlier run: a cell that does not run now must have no output to grade."""
    notebook.nbformat_minor = nbformat.v4.nbformat_minor
    if isinstance(notebook.get("metadata"), dict):
        notebook.metadata.pop("widgets", None)
    cells = notebook.get("cells")
    seen = set()
    for cell in cells if isinstance(cells, list) else []:  # what is not even a cell is left to the validation
        if not isinstance(cell, dict):
            continue
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not CELL_ID.match(cell_id) or cell_id in seen:
            cell["id"] = generate_corpus_id()
        seen.add(cell["id"])
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nbformat.from_dict(normalize(notebook, strip_invalid_metadata=True)[1])


def _copy_folder(source: Path, workdir: Path, rubric: Rubric) -> None:
    """Copy the folder's directories and regular files; links, fifos and devices are left behind."""
    budget = rubric.submission_bytes
    for relative, is_directory in _listing(source, rubric):
        if is_directory:
            (workdir / relative).mkdir()
        else:
            budget -= _copy_file(source / relative, workdir / relative, budget)


def _listing(folder: Path, rubric: Rubric) -> list[tuple[str, bool]]:
    """The folder's directories and regular files (relative path, is a directory), parents first; refused past
    the rubric's count of entries or apparent bytes (a sparse file counts its full size), or nested deeper than
    MAX_DEPTH, before any is copied. A loop, not recursion, so that no nesting can break the walk itself."""
    listed: list[tuple[str, bool]] = []
    entries = total = 0
    pending = [""]
    while pending:
        relative = pending.pop()
        if relative.count(os.sep) >= MAX_DEPTH:
            raise Rejected("too_large", f"the folder is nested more than {MAX_DEPTH} folders deep")
        with os.scandir(folder / relative) as scan:
            for entry in scan:
                entries += 1
                if entries > rubric.submission_files:
                    raise Rejected(
                        "too_large", f"the folder holds more than {rubric.submission_files} files and folders"
                    )
                path = os.path.join(relative, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    listed.append((path, True))
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    _check_size("the folder", total, rubric.submission_bytes)
                    listed.append((path, False))
    return listed


def _copy_file(source: Path, target: Path, limit: int) -> int:
    """Copy a regular file, never through a link, and refuse it past ``limit`` bytes (it may have grown since it
    was measured); return its size. Anything else found at ``source`` now (a fifo) is left behind."""
    descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(descriptor, "rb") as reader:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return 0
        copied = 0
        with target.open("xb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                copied += len(chunk)
                _check_size(f"the file {source.name}", copied, limit)
                writer.write(chunk)
    return copied


def _check_size(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise Rejected("too_large", f"{what} holds more than the {limit:,} bytes accepted")


def _only_notebook(workdir: Path, rubric: Rubric) -> Path:
    """The notebook at the top of ``workdir``: the only one there, else the one named after the homework."""
    _lift_single_folder(workdir)
    notebooks = sorted(path for path in workdir.glob("*.ipynb") if path.is_file())
    expected = workdir / f"{rubric.homework}.ipynb"
    if len(notebooks) == 1 or expected in notebooks:
        notebook = notebooks[0] if len(notebooks) == 1 else expected
        _check_size(f"the notebook {notebook.name}", notebook.lstat().st_size, rubric.notebook_bytes)
        return notebook
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
    folder = children[0].rename(workdir / f".{uuid.uuid4().hex}")  # its contents may hold its own name
    for child in folder.iterdir():
        child.rename(workdir / child.name)
    folder.rmdir()


def _os_problem(error: OSError) -> str:
    """The error without the grader's own paths, which are no business of the student's feedback."""
    name = f" ({Path(error.filename).name})" if error.filename else ""
    return f"{error.strerror or type(error).__name__}{name}"
