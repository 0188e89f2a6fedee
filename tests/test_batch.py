"""The batch and the report never cost a student their row: the gradebook grows as submissions finish, a grader
failure is an error row that says what it knows, and a report too large or failing loses parts, not the score."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import nbformat
import pytest

import grader
from grader import __main__ as cli
from grader import batch, report
from grader.result import Result
from grader.rubric import load

RUBRIC = load(Path(__file__).resolve().parents[1] / "homework" / "homework-195.rubric.toml")


def rows(out: Path) -> list[dict]:
    with (out / "gradebook.csv").open() as stream:
        return list(csv.DictReader(stream))


def test_the_gradebook_is_written_after_every_submission(tmp_path, monkeypatch):
    """Killed while grading the third, the grader leaves the first two rows in a whole gradebook."""
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for name in ("ana", "ben", "cai", "dee"):
        (submissions / f"{name}.ipynb").write_text("{}")
    graded = []

    def fake_grade(path, rubric, out, **options):
        if len(graded) == 2:
            raise KeyboardInterrupt  # the instructor's Ctrl-C, or the machine going down
        graded.append(options["student"])
        return Result(options["student"], "graded", 3, rubric.max_score, flags=["metrics_honest"])

    monkeypatch.setattr(batch, "grade_submission", fake_grade)
    with pytest.raises(KeyboardInterrupt):
        cli.grade_folder(submissions, RUBRIC, tmp_path / "out", jobs=1)
    assert [(row["student"], row["flags"]) for row in rows(tmp_path / "out")] == [
        ("ana", "metrics_honest"),
        ("ben", "metrics_honest"),
    ]
    assert not list((tmp_path / "out").glob(".gradebook-*")), "no partial file left beside it"


def test_a_grader_failure_is_an_error_row_that_keeps_the_sandbox_facts(tmp_path, monkeypatch):
    notebook = tmp_path / "ana.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), notebook)
    monkeypatch.setattr(grader.probe, "service", lambda rubric: None)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the grader")

    monkeypatch.setattr(grader.execute, "run_notebook", broken)
    result = grader.grade_submission(notebook, RUBRIC, tmp_path / "out")
    assert result.status == "error" and "a bug in the grader" in result.message
    assert result.sandbox["isolated"] is grader.sandbox.create(RUBRIC.limits).isolated
    assert ("not_isolated" in result.flags) is (not result.sandbox["isolated"])
    assert (tmp_path / "out" / "ana" / "result.json").is_file()


def graded_result(runs: int = 3) -> Result:
    details = {
        "runs": [
            {
                "rank": rank,
                "run_id": f"{rank:032x}",
                "name": f"run-{rank}",
                "model_type": "ridge",
                "metrics": {"rmse_test": 0.5 + rank / 100},
                "metric": 0.5 + rank / 100,
                "rescored": 0.5 + rank / 100,
                "has_model": True,
                "production": rank == 1,
            }
            for rank in range(1, runs + 1)
        ],
        "best": None,
        "production": None,
    }
    return Result("ana", "graded", 16, 16, details=details)


def big_notebook(outputs: int) -> nbformat.NotebookNode:
    cells = []
    for _ in range(outputs):
        cell = nbformat.v4.new_code_cell("print('x' * 19_000)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 19_000)]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def test_a_failing_plot_is_left_out_with_a_note_and_the_score_stays(tmp_path, monkeypatch):
    def broken(*args):
        raise ValueError("mathtext")

    monkeypatch.setattr(report, "_runs_plot", broken)
    result = graded_result()
    report.write_submission(result, None, tmp_path, RUBRIC)
    page = (tmp_path / "feedback.html").read_text()
    assert "could not be drawn" in page and "data:image/png" not in page
    assert result.score == 16


def test_what_is_kept_fits_kept_bytes_and_says_what_was_left_out(tmp_path):
    rubric = dataclasses.replace(RUBRIC, kept_bytes=400_000)
    report.write_submission(graded_result(), big_notebook(outputs=100), tmp_path, rubric)  # ~1.9 MB of outputs
    kept = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert kept <= rubric.kept_bytes
    assert not (tmp_path / "ana.ipynb").exists()
    assert "The executed notebook was not kept" in (tmp_path / "feedback.html").read_text()


def test_the_kernels_log_is_kept_within_kept_bytes(tmp_path):
    rubric = dataclasses.replace(RUBRIC, kept_bytes=400_000)
    result = graded_result()
    result.status, result.kernel_log = "kernel_died", "grader sandbox: wall-clock limit reached\n" + "\udcff" * 100
    report.write_submission(result, big_notebook(outputs=100), tmp_path, rubric)
    assert (tmp_path / report.KERNEL_LOG).read_text(errors="replace").startswith("grader sandbox: wall-clock")
    assert sum(path.stat().st_size for path in tmp_path.iterdir()) <= rubric.kept_bytes
    assert "kernel_log" not in (tmp_path / "result.json").read_text()

    report.write_submission(graded_result(), None, tmp_path / "graded", rubric)
    assert not (tmp_path / "graded" / report.KERNEL_LOG).exists()


def test_thousands_of_runs_make_a_bounded_page(tmp_path):
    report.write_submission(graded_result(runs=5000), None, tmp_path, RUBRIC)
    page = (tmp_path / "feedback.html").read_text()
    assert "and 4800 more runs" in page
    assert (tmp_path / "feedback.html").stat().st_size < RUBRIC.kept_bytes


def test_a_250_byte_name_keeps_its_executed_notebook(tmp_path):
    result = graded_result()
    result.student = "n" * 250
    report.write_submission(result, big_notebook(outputs=1), tmp_path, RUBRIC)
    assert (tmp_path / "submission.ipynb").is_file()


def test_names_that_are_another_entrys_file_name_stay_apart(tmp_path):
    from grader.intake import find_submissions

    for name in ("eve.ipynb", "eve.zip", "eve.zip.ipynb"):
        (tmp_path / name).write_text("{}")
    names = [submission.student for submission in find_submissions(tmp_path)]
    assert sorted(names) == names and len(set(names)) == 3


def test_the_gradebook_survives_undecodable_and_formula_names(tmp_path):
    undecodable = b"bad\xff".decode(errors="surrogateescape")
    results = [Result(undecodable, "graded", 1, 16), Result("=2+3", "graded", 2, 16)]
    report.write_gradebook(results, tmp_path)
    text = (tmp_path / "gradebook.csv").read_text()
    assert "bad\\udcff" in text and "'=2+3" in text
