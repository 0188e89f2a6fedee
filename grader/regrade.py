"""Incremental re-grading: a result is reused only while everything it depends on is byte for byte the same.

The key of a grading is a SHA-256 over
- the submission as intake staged it (grader/staging.py): its files' bytes and paths, never a name's or a
  time's say-so, so touching or back-dating a file buys nothing, and any changed byte re-grades (a submission
  intake refuses is keyed by its refusal: a change that leaves the same refusal leaves the same row);
- the student's name (it is written into the result and the feedback);
- the rubric's every value (points, limits, hints; ``--timeout`` included), not the path it was read from;
- the grading environment: the bytes of the kit's own code (the grader and coursekit packages, templates and
  catalogues), the Python version and every installed distribution's version, MLflow's among them.

The record of a grading sits in ``OUT/.regrade/`` (one small file per student): the key and a digest of every
file the grading left in ``OUT/NAME/``, signed with HMAC-SHA-256 under a secret kept outside OUT (in the
instructor's ``$XDG_CONFIG_HOME/mlflow-kit-grader/``, mode 0600). A result.json or feedback edited in OUT, a
record copied from another student, or a record forged without the secret is not trusted: that submission is
graded again. Results that say the grader itself failed, the batch's own error rows (a worker that died), a kernel
that died (which may be the machine's doing: its out-of-memory killer, a crash under load, none of it in the key),
and gradings that ran without the sandbox are never recorded, so a re-run grades them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import importlib.metadata
import json
import os
import secrets
import sys
from functools import cache
from pathlib import Path

import coursekit
import grader
from grader.result import Result
from grader.rubric import Rubric
from grader.staging import Staged

RECORDS = ".regrade"
GRADER_FAILED = "the grader failed"
SECRET_BYTES = 32
CODE_SUFFIXES = (".py", ".j2", ".toml", ".html", ".css")


def key(staged: Staged, rubric: Rubric) -> str:
    """The key of grading ``staged`` under ``rubric`` in this environment."""
    content = hashlib.sha256()
    for part in (staged.digest, _rubric_digest(rubric), environment()):
        content.update(part.encode() + b"\0")
    return content.hexdigest()


@cache
def environment() -> str:
    """A digest of the kit's code and of every installed distribution: what a grading's outcome depends on beside
    the submission and the rubric. A Dask worker's must equal the client's (grader/batch.py checks it)."""
    content = hashlib.sha256(sys.version.encode())
    for package in (grader, coursekit):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*")):
            if path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts and path.is_file():
                content.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
                content.update(path.read_bytes())
    # A set: the kit's own egg-info is found twice when the working directory is the repository (on sys.path as
    # '' and through the editable install), so a worker started elsewhere would otherwise differ.
    versions = sorted(
        {
            f"{distribution.metadata['Name']}=={distribution.version}"
            for distribution in importlib.metadata.distributions()
        }
    )
    content.update("\n".join(versions).encode())
    return content.hexdigest()


def _rubric_digest(rubric: Rubric) -> str:
    values = dataclasses.asdict(rubric)
    del values["path"]  # the same rubric read from elsewhere grades the same
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def reusable(out: Path, student: str, grading_key: str) -> Result | None:
    """The result kept in ``out`` for ``student`` if it was graded under ``grading_key`` and is untouched since."""
    try:
        record = json.loads(_record_path(out, student).read_text())
        signed = {name: record[name] for name in ("student", "key", "files")}
        if not hmac.compare_digest(record["mac"], _mac(signed)):
            return None
        if signed["student"] != student or signed["key"] != grading_key or signed["files"] != _digests(out / student):
            return None
        result = Result.from_json(json.loads((out / student / "result.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # no record, or one that is not ours: grade it
        return None
    return result if result.student == student else None


def remember(out: Path, result: Result, grading_key: str) -> None:
    """Record that ``out/NAME`` holds the grading of ``grading_key``. Not recorded: a failure of the grader, a dead
    kernel, and a grading without the sandbox (its notebook ran beside the grader: graded again, isolated once
    bwrap is there)."""
    unisolated = result.sandbox.get("isolated") is False
    machine_dependent = result.status == "kernel_died" or result.message.startswith(GRADER_FAILED)
    if unisolated or machine_dependent or not (out / result.student / "result.json").is_file():
        forget(out, result.student)
        return
    signed = {"student": result.student, "key": grading_key, "files": _digests(out / result.student)}
    path = _record_path(out, result.student)
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({**signed, "mac": _mac(signed)}, ensure_ascii=True))
    os.replace(partial, path)


def forget(out: Path, student: str) -> None:
    _record_path(out, student).unlink(missing_ok=True)


def _record_path(out: Path, student: str) -> Path:
    # A hash, not the name: a name may be 255 bytes long, or not valid UTF-8.
    return out / RECORDS / f"{hashlib.sha256(student.encode(errors='surrogateescape')).hexdigest()[:40]}.json"


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of each file the grading left at the top of ``folder`` (result.json, feedback, the notebook)."""
    return {
        path.name.encode(errors="surrogateescape").hex(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.is_symlink()
    }


def _mac(signed: dict) -> str:
    message = json.dumps(signed, sort_keys=True, ensure_ascii=True).encode()
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()


@cache
def _secret() -> bytes:
    """The instructor's signing secret, made on first use; outside OUT, so whoever can write OUT cannot sign."""
    folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mlflow-kit-grader"
    path = folder / "regrade-secret"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(secrets.token_bytes(SECRET_BYTES))
    return path.read_bytes()
