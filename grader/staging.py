"""A submission staged once, by intake, on the machine that runs the batch, and held as bytes.

Intake (grader/intake.py) copies or unzips a submission into a working folder with every limit checked (sizes,
file counts, links, zip bombs). The batch does that here, into a scratch folder, and packs what it produced into
one deterministic tar: the bytes that the re-grading key hashes (grader/regrade.py) and, with the Dask executor,
the bytes that travel to a worker. A worker so never receives more than intake lets through (at most the rubric's
``archive_bytes`` or ``submission_bytes``), never follows a student's link, never unzips anything itself; and the
key covers exactly what is graded, read once. A submission intake refuses travels as its refusal (status and
message), which the worker turns into the same row as the local grader would.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from grader import intake
from grader.rubric import Rubric

MESSAGE_CHARS = 4000


@dataclass(frozen=True)
class Staged:
    """What intake made of one submission: its files as a tar and the notebook to run, or why it was refused."""

    student: str
    files: bytes = b""
    notebook: str = ""  # relative to the working folder
    refusal: tuple[str, str] | None = None  # (status, message) of intake.Rejected

    @property
    def digest(self) -> str:
        """SHA-256 over the staged bytes (or the refusal): what the re-grading key covers of the submission."""
        content = hashlib.sha256()
        for part in (self.student, self.notebook, repr(self.refusal)):
            content.update(part.encode(errors="surrogateescape") + b"\0")
        content.update(self.files)
        return content.hexdigest()

    def unpack(self, workdir: Path) -> Path:
        """Lay the staged files into the empty ``workdir``; return the notebook, or raise the intake's refusal."""
        if self.refusal is not None:
            raise intake.Rejected(*self.refusal)
        unpack_tree(self.files, workdir)
        return workdir / self.notebook


def stage(submission: intake.Submission, rubric: Rubric) -> Staged:
    """Run intake on ``submission`` into a scratch folder and pack the result; the folder is removed."""
    scratch = Path(tempfile.mkdtemp(prefix="grader-staging-"))
    workdir = scratch / "work"
    workdir.mkdir()
    try:
        notebook = intake.stage(submission.path, workdir, rubric)
        return Staged(submission.student, pack_tree(workdir), notebook.relative_to(workdir).as_posix())
    except intake.Rejected as rejection:
        return Staged(submission.student, refusal=(rejection.status, rejection.message))
    except Exception:  # an intake bug is this submission's error row, as it would be in grade_submission
        return Staged(submission.student, refusal=("error", _grader_failed()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _grader_failed() -> str:
    return ("the grader failed:\n" + traceback.format_exc())[-MESSAGE_CHARS:]


def pack_tree(folder: Path) -> bytes:
    """The folder's directories and regular files as a tar, the same bytes for the same tree: entries sorted,
    times, owners and modes fixed. Anything else (a link, a fifo) is left out, as intake leaves it out."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for relative in _walk(folder):
            path = folder / relative
            mode = path.lstat().st_mode
            info = tarfile.TarInfo(relative)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if stat.S_ISDIR(mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif stat.S_ISREG(mode):
                info.mode, info.size = 0o644, path.lstat().st_size
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
    return buffer.getvalue()


def unpack_tree(data: bytes, folder: Path) -> None:
    """Unpack a ``pack_tree`` tar into ``folder`` with tarfile's ``data`` filter: nothing outside it, no links."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r", encoding="utf-8") as tar:
        tar.extractall(folder, filter="data")


def _walk(folder: Path) -> list[str]:
    """Relative paths under ``folder``, parents before children, sorted; a loop, so no nesting breaks it."""
    found, pending = [], [""]
    while pending:
        relative = pending.pop()
        with os.scandir(folder / relative) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path = os.path.join(relative, entry.name)
            found.append(path)
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
    return sorted(found, key=lambda path: (path.count(os.sep), path))
