"""Incremental re-grading: only what changed is graded again, the outcome equals a full re-grade, and neither a
student nor an edited OUT can make the grader skip a submission. Samples that fail fast keep this cheap."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import __main__ as cli
from grader import batch, regrade, staging
from grader.intake import Submission
from grader.result import Result
from grader.rubric import load

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "homework" / "examples"
RUBRIC = load(REPO / "homework" / "homework-195.rubric.toml")
CLASS = ("not-json.ipynb", "no-notebook", "remote-server.ipynb")  # rejected at intake, rejected, executed (~5 s)


@pytest.fixture
def graded_names(monkeypatch, tmp_path) -> list[str]:
    """The students graded for real (grade_submission called), in order."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the signing secret of this test
    regrade._secret.cache_clear()
    names: list[str] = []
    real = batch.grade_submission

    def counting(path, *args, **kwargs):
        names.append(kwargs["student"])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(batch, "grade_submission", counting)
    return names


def a_class(folder: Path, *late: str) -> Path:
    folder.mkdir(exist_ok=True)
    for entry in CLASS:
        copy = shutil.copytree if (EXAMPLES / entry).is_dir() else shutil.copy
        if not (folder / entry).exists():
            copy(EXAMPLES / entry, folder / entry)
    for name in late:
        shutil.copy(EXAMPLES / "not-json.ipynb", folder / f"{name}.ipynb")
    return folder


def grade(submissions: Path, out: Path, force: bool = False) -> list[dict]:
    cli.grade_folder(submissions, RUBRIC, out, jobs=2, force=force)
    with (out / "gradebook.csv").open() as stream:
        return list(csv.DictReader(stream))


def outputs(out: Path) -> dict[str, str]:
    return {
        str(path.relative_to(out)): path.read_text()
        for path in sorted(out.rglob("*"))
        if path.is_file() and ".regrade" not in path.parts
    }


def test_an_unchanged_class_is_not_regraded_and_late_ones_cost_one_grading_each(tmp_path, graded_names):
    submissions = a_class(tmp_path / "class")
    first = grade(submissions, tmp_path / "out")
    assert sorted(graded_names) == ["no-notebook", "not-json", "remote-server"]
    kept = outputs(tmp_path / "out")

    graded_names.clear()
    assert grade(submissions, tmp_path / "out") == first
    assert graded_names == []
    assert outputs(tmp_path / "out") == kept

    a_class(submissions, "late-1", "late-2", "late-3")
    with_late = grade(submissions, tmp_path / "out")
    assert sorted(graded_names) == ["late-1", "late-2", "late-3"]

    graded_names.clear()
    full = grade(submissions, tmp_path / "full", force=True)  # a full re-grade, from nothing
    assert len(graded_names) == 6, "--force grades every submission"
    assert with_late == full
    incremental = {name: text for name, text in outputs(tmp_path / "out").items() if name.endswith("result.json")}
    assert incremental == {name: text for name, text in outputs(tmp_path / "full").items() if name in incremental}


def test_the_key_follows_bytes_not_names_or_times(tmp_path, graded_names):
    submissions = tmp_path / "class"
    submissions.mkdir()
    shutil.copy(EXAMPLES / "not-json.ipynb", submissions / "ana.ipynb")
    shutil.copytree(EXAMPLES / "no-notebook", submissions / "ben")
    grade(submissions, tmp_path / "out")

    graded_names.clear()
    for path in (submissions / "ana.ipynb", *(submissions / "ben").rglob("*")):
        os.utime(path, (0, 0))  # back-dated: nothing changed
    grade(submissions, tmp_path / "out")
    assert graded_names == []

    (submissions / "ana.ipynb").write_bytes((submissions / "ana.ipynb").read_bytes() + b" ")  # one byte
    os.utime(submissions / "ana.ipynb", (0, 0))  # and an old time, to pass for unchanged
    (submissions / "ben" / "extra.txt").write_text("x")  # refused as before, for the same reason: the same row
    grade(submissions, tmp_path / "out")
    assert graded_names == ["ana"]

    graded_names.clear()
    (submissions / "ben" / "homework-195.ipynb").write_text("{}")  # a notebook added to the folder
    grade(submissions, tmp_path / "out")
    assert graded_names == ["ben"]


def test_the_key_covers_the_rubric_the_name_and_the_environment(tmp_path, monkeypatch):
    staged = staging.stage(Submission("ana", EXAMPLES / "missing-metric"), RUBRIC)
    again = staging.stage(Submission("ana", EXAMPLES / "missing-metric"), RUBRIC)
    key = regrade.key(staged, RUBRIC)
    assert staged.files and key == regrade.key(again, RUBRIC), "staging the same bytes twice gives the same key"
    more_points = tuple(dataclasses.replace(spec, points=spec.points + 1) for spec in RUBRIC.checks)
    assert key != regrade.key(staged, dataclasses.replace(RUBRIC, checks=more_points))
    assert key != regrade.key(staged, dataclasses.replace(RUBRIC, language="es")), "--lang changes it"
    timeout = dataclasses.replace(RUBRIC.limits, wall_seconds=RUBRIC.limits.wall_seconds + 1)
    assert key != regrade.key(staged, dataclasses.replace(RUBRIC, limits=timeout)), "--timeout changes it"
    assert key == regrade.key(staged, dataclasses.replace(RUBRIC, path=tmp_path / "copy.toml"))
    assert key != regrade.key(staging.stage(Submission("bob", EXAMPLES / "missing-metric"), RUBRIC), RUBRIC)
    monkeypatch.setattr(regrade, "environment", lambda: "another MLflow, or another commit of the grader")
    assert key != regrade.key(staged, RUBRIC)


def test_a_result_tampered_in_out_is_not_trusted(tmp_path, graded_names):
    submissions = tmp_path / "class"
    submissions.mkdir()
    for name in ("ana", "ben"):
        shutil.copy(EXAMPLES / "not-json.ipynb", submissions / f"{name}.ipynb")
    honest = grade(submissions, tmp_path / "out")
    out = tmp_path / "out"

    result = json.loads((out / "ana" / "result.json").read_text())
    (out / "ana" / "result.json").write_text(json.dumps({**result, "status": "graded", "score": 16}))
    graded_names.clear()
    assert grade(submissions, out) == honest
    assert graded_names == ["ana"], "the edited result.json no longer matches its signed record"
    assert json.loads((out / "ana" / "result.json").read_text())["status"] == "invalid_notebook"

    ana, ben = (regrade._record_path(out, name) for name in ("ana", "ben"))
    ben.write_text(ana.read_text())  # a valid, signed record, but another student's
    record = json.loads(ana.read_text())
    ana.write_text(json.dumps({**record, "key": "0" * 64}))  # a record edited without the secret
    graded_names.clear()
    assert grade(submissions, out) == honest
    assert sorted(graded_names) == ["ana", "ben"]


def test_a_client_killed_mid_batch_loses_no_finished_row_and_a_rerun_grades_only_the_rest(tmp_path, graded_names):
    submissions = a_class(tmp_path / "class", "late-1")
    real = batch.grade_submission

    def interrupted(path, *args, **kwargs):
        if len(graded_names) == 2:
            raise KeyboardInterrupt  # the instructor's Ctrl-C, or the machine going down
        return real(path, *args, **kwargs)

    batch.grade_submission = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            cli.grade_folder(submissions, RUBRIC, tmp_path / "out", jobs=1)
    finally:
        batch.grade_submission = real
    with (tmp_path / "out" / "gradebook.csv").open() as stream:
        finished = [row["student"] for row in csv.DictReader(stream)]
    assert finished and len(finished) <= 2
    graded_names.clear()
    rows = grade(submissions, tmp_path / "out")
    assert len(rows) == 4
    assert sorted(graded_names) == sorted(set(row["student"] for row in rows) - set(finished))


def test_a_grading_without_the_sandbox_is_never_reused(tmp_path, monkeypatch):
    """Graded beside the grader (no bwrap): graded again next time, so that it is isolated once bwrap is there."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    regrade._secret.cache_clear()
    for isolated, kept in ((False, False), (True, True), (None, True)):  # None: refused at intake, never ran
        out = tmp_path / f"out-{isolated}"
        result = Result("ana", "graded", 3, 16, sandbox={"isolated": isolated})
        (out / "ana").mkdir(parents=True)
        (out / "ana" / "result.json").write_text(json.dumps(result.to_json()))
        regrade.remember(out, result, "key")
        assert (regrade.reusable(out, "ana", "key") is not None) is kept, isolated


def test_a_dead_kernel_is_graded_again(tmp_path, monkeypatch):
    """The machine may have killed it (out of memory on the host): nothing in the key says it would die again."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    regrade._secret.cache_clear()
    for status, kept in (("kernel_died", False), ("timeout", True), ("error", True)):
        out = tmp_path / f"out-{status}"
        result = Result("ana", status, 3, 16, sandbox={"isolated": True})
        (out / "ana").mkdir(parents=True)
        (out / "ana" / "result.json").write_text(json.dumps(result.to_json()))
        regrade.remember(out, result, "key")
        assert (regrade.reusable(out, "ana", "key") is not None) is kept, status


def test_the_environment_is_the_same_from_any_working_directory(tmp_path):
    """A Dask worker started elsewhere (``dask worker`` in its home) must find the same environment as the client
    run in the repository, where the kit's own egg-info is on sys.path twice."""
    here = [sys.executable, "-c", "from grader import regrade; print(regrade.environment())"]
    from_repo = subprocess.run(here, cwd=REPO, capture_output=True, text=True, check=True).stdout
    elsewhere = subprocess.run(here, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert from_repo == elsewhere == regrade.environment() + "\n"
