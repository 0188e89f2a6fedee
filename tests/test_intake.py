"""Intake: what Jupyter runs is accepted, what is too large is refused before it is copied or parsed, nothing is
read through a link, and nothing a notebook saved from an earlier run is graded."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import resource
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader import grade_submission, intake
from grader.archive import MAX_DEPTH
from grader.rubric import RubricError, load

REPO = Path(__file__).resolve().parents[1]
RUBRIC_PATH = REPO / "homework" / "homework-195.rubric.toml"
RUBRIC = load(RUBRIC_PATH)
SOLUTION = REPO / "homework" / "solution" / "homework-195.ipynb"


def solution() -> dict:
    return json.loads(SOLUTION.read_text())


def write(path: Path, notebook: dict) -> Path:
    path.write_text(json.dumps(notebook))
    return path


def staged(submission: Path, tmp_path: Path, rubric=RUBRIC) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True)
    return intake.stage(submission, workdir, rubric)


def refused(submission: Path, tmp_path: Path, rubric=RUBRIC) -> intake.Rejected:
    with pytest.raises(intake.Rejected) as rejection:
        intake.read_notebook(staged(submission, tmp_path, rubric))
    return rejection.value


# --- notebooks as real tools write them -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minor_4(tmp_path_factory) -> tuple[Path, dict]:
    """The reference solution as nbformat 4.4 keeping its cells' ids, graded end to end."""
    folder = tmp_path_factory.mktemp("minor-4")
    notebook = solution()
    notebook["nbformat_minor"] = 4
    path = write(folder / "homework-195.ipynb", notebook)
    result = grade_submission(path, RUBRIC, folder / "out", student="minor-4")
    return folder / "out" / "minor-4", result.to_json()


@pytest.mark.slow
def test_a_minor_4_notebook_that_keeps_its_ids_is_run_and_graded(minor_4):
    folder, result = minor_4
    assert result["status"] == "graded", result["message"]
    assert result["score"] == result["max_score"] == RUBRIC.max_score
    executed = nbformat.read(folder / "minor-4.ipynb", as_version=4)
    assert executed.nbformat_minor == 5
    assert [cell.id for cell in executed.cells] == [cell["id"] for cell in solution()["cells"]]


@pytest.mark.slow
def test_outputs_saved_in_a_cell_that_does_not_run_are_not_graded(minor_4, tmp_path):
    # The last code cell is skipped (nbclient's skip-execution tag) but carries the real predictions, copied from
    # an honest run: before, they were graded as if printed now.
    honest, _ = minor_4
    honest_run = nbformat.read(honest / "minor-4.ipynb", as_version=4)
    real_outputs = [cell for cell in honest_run.cells if cell.get("outputs")][-1]
    notebook = solution()
    last = next(cell for cell in reversed(notebook["cells"]) if cell["cell_type"] == "code")
    last["metadata"]["tags"] = ["skip-execution"]
    last["outputs"] = copy.deepcopy(real_outputs.outputs)
    last["execution_count"] = 99
    result = grade_submission(write(tmp_path / "homework-195.ipynb", notebook), RUBRIC, tmp_path / "out", student="s")
    final = next(check for check in result.checks if check.id == "final_prediction")
    assert not final.passed
    assert result.score == RUBRIC.max_score - RUBRIC.points["final_prediction"]
    executed = nbformat.read(tmp_path / "out" / "s" / "s.ipynb", as_version=4)
    skipped = next(cell for cell in reversed(executed.cells) if cell.cell_type == "code")
    assert skipped.outputs == [] and skipped.execution_count is None


def test_missing_duplicate_and_invalid_ids_are_repaired_and_valid_ones_kept(tmp_path):
    notebook = solution()
    cells = notebook["cells"]
    del cells[0]["id"]
    cells[2]["id"] = cells[1]["id"]
    cells[3]["id"] = "not a valid id!"
    cells[4]["metadata"] = {"tags": "not-a-list"}  # metadata the format forbids is dropped, not fatal
    read = intake.read_notebook(staged(write(tmp_path / "homework-195.ipynb", notebook), tmp_path))
    ids = [cell.id for cell in read.cells]
    assert len(set(ids)) == len(ids)
    assert ids[1] == cells[1]["id"] and ids[2] != ids[1] and ids[3] != "not a valid id!"
    assert ids[5:] == [cell["id"] for cell in cells[5:]]
    assert "tags" not in read.cells[4].metadata
    nbformat.validate(read)


def test_saved_outputs_counts_and_widget_state_are_dropped_at_intake(tmp_path):
    notebook = solution()
    code = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "from another run"}]
    code["execution_count"] = 7
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    read = intake.read_notebook(staged(write(tmp_path / "homework-195.ipynb", notebook), tmp_path))
    assert all(cell.outputs == [] and cell.execution_count is None for cell in read.cells if cell.cell_type == "code")
    assert "widgets" not in read.metadata


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda notebook: notebook["cells"][1].update(source=42), "cells/1"),
        (lambda notebook: notebook["cells"][1].pop("source"), "cells/1"),
        (lambda notebook: notebook["cells"][1].update(cell_type="program"), "cells/1"),
    ],
)
def test_what_cannot_be_run_is_refused_with_the_validation_error(tmp_path, change, said):
    notebook = solution()
    change(notebook)
    rejection = refused(write(tmp_path / "homework-195.ipynb", notebook), tmp_path)
    assert rejection.status == "invalid_notebook"
    assert rejection.message.startswith("homework-195.ipynb cannot be run: ") and said in rejection.message
    assert len(rejection.message) <= 500


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"nbformat": 99, "cells": []}', "[]", "\ud800"])
def test_what_is_not_a_notebook_is_refused_not_crashed_on(tmp_path, text):
    path = tmp_path / "broken.ipynb"
    path.write_text(text, errors="surrogatepass")
    rejection = refused(path, tmp_path)
    assert rejection.status == "invalid_notebook"
    assert "broken.ipynb is not a valid notebook" in rejection.message


# --- sizes, before anything is copied or parsed -----------------------------------------------------------------


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as stream:
        stream.truncate(size)  # apparent size only: no disk used
    return path


def test_a_sparse_4_gb_file_in_a_folder_is_refused_before_it_is_copied(tmp_path):
    folder = tmp_path / "alice"
    folder.mkdir()
    write(folder / "homework-195.ipynb", solution())
    sparse(folder / "data.bin", 4 * 2**30)
    rejection = refused(folder, tmp_path)
    assert rejection.status == "too_large"
    assert f"the folder holds more than the {RUBRIC.submission_bytes:,} bytes accepted" in rejection.message
    assert not any((tmp_path / "work").iterdir()), "nothing may be copied"


def test_a_400_mb_notebook_is_refused_before_it_is_read(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rejection = refused(sparse(tmp_path / "bob.ipynb", 400 * 2**20), tmp_path)
    assert rejection.status == "too_large"
    assert "the notebook bob.ipynb holds more than" in rejection.message
    assert not any((tmp_path / "work").iterdir())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # kB: it was never read


def test_a_notebook_too_large_inside_a_folder_is_refused_before_it_is_parsed(tmp_path):
    folder = tmp_path / "carol"
    folder.mkdir()
    sparse(folder / "homework-195.ipynb", RUBRIC.notebook_bytes + 1)
    assert refused(folder, tmp_path).status == "too_large"


def test_too_many_files_are_refused(tmp_path):
    folder = tmp_path / "dave"
    folder.mkdir()
    write(folder / "homework-195.ipynb", solution())
    for index in range(RUBRIC.submission_files):
        (folder / f"f{index}").touch()
    rejection = refused(folder, tmp_path)
    assert rejection.status == "too_large"
    assert f"more than {RUBRIC.submission_files} files and folders" in rejection.message


def test_a_zip_larger_than_a_submission_may_be_is_refused_before_it_is_opened(tmp_path):
    rejection = refused(sparse(tmp_path / "erin.zip", RUBRIC.submission_bytes + 1), tmp_path)
    assert rejection.status == "too_large"
    assert "the zip erin.zip holds more than" in rejection.message


def test_a_zip_listing_far_more_members_than_accepted_is_refused_before_they_are_listed(tmp_path):
    archive = tmp_path / "frank.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        for index in range(20_000):
            zipped.writestr(zipfile.ZipInfo(f"{index:x}"), b"")
    rubric = dataclasses.replace(RUBRIC, archive_members=10)
    rejection = refused(archive, tmp_path, rubric)
    assert rejection.status == "unsafe_archive"
    assert "list of members" in rejection.message


def test_folders_nested_too_deep_are_refused_from_zips_and_folders(tmp_path):
    archive = tmp_path / "gina.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("homework-195.ipynb", json.dumps(solution()))
        zipped.writestr("a/" * (MAX_DEPTH + 1) + "x.txt", "deep")
    assert refused(archive, tmp_path / "z").status == "unsafe_archive"
    folder = tmp_path / "hank"
    deep = folder.joinpath(*["a"] * (MAX_DEPTH + 2))
    deep.mkdir(parents=True)
    write(folder / "homework-195.ipynb", solution())
    rejection = refused(folder, tmp_path / "f")
    assert rejection.status == "too_large" and "nested more than" in rejection.message


# --- links and special files ------------------------------------------------------------------------------------


def test_a_submission_that_is_a_link_is_not_followed(tmp_path):
    secret = write(tmp_path / "secret.ipynb", solution())
    link = tmp_path / "ivy.ipynb"
    link.symlink_to(secret)
    rejection = refused(link, tmp_path)
    assert rejection.status == "missing_notebook" and "symbolic link" in rejection.message
    assert not any((tmp_path / "work").iterdir())


def test_links_and_fifos_in_a_folder_are_left_behind(tmp_path):
    folder = tmp_path / "jack"
    folder.mkdir()
    write(folder / "homework-195.ipynb", solution())
    (folder / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(folder / "pipe")  # copying it would block the grader forever
    notebook = staged(folder, tmp_path)
    assert sorted(entry.name for entry in notebook.parent.iterdir()) == ["homework-195.ipynb"]


def test_an_unreadable_submission_becomes_its_status(tmp_path, monkeypatch):
    path = write(tmp_path / "kim.ipynb", solution())

    def broken_disk(*args, **kwargs):
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(intake.os, "open", broken_disk)
    with pytest.raises(intake.Rejected) as rejection:
        staged(path, tmp_path)
    assert rejection.value.status == "error"
    assert rejection.value.message == "the submission could not be copied: Input/output error (kim.ipynb)"


# --- the rubric's intake limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["submission_bytes", "submission_files", "notebook_bytes"])
def test_the_rubric_must_give_each_intake_limit(tmp_path, key):
    text = RUBRIC_PATH.read_text()
    line = next(line for line in text.splitlines() if line.startswith(f"{key} ="))
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(line, f"{key} = 0"))
    with pytest.raises(RubricError, match=f"'limits.{key}' must be positive"):
        load(path)
    path.write_text(text.replace(line, ""))
    with pytest.raises(RubricError, match=f"'limits.{key}' is missing"):
        load(path)
