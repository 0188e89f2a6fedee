"""Grade the sample submissions once with the CLI and check every outcome, file and limit."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from grader.__main__ import main
from grader.rubric import load

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "homework" / "examples"
RUBRIC_PATH = REPO / "homework" / "homework-195.rubric.toml"
RUBRIC = load(RUBRIC_PATH)
CHECK_IDS = RUBRIC.check_ids
# Long enough for any sample under two parallel jobs on a 2-core machine busy with other work (a notebook's
# imports alone can take 30 s then); the endless loop sleeps, so it holds one job's slot but no core.
TIMEOUT = 120
# Without a Production version these fail; metrics_honest still re-scores the best run's model when it has one.
NOT_REGISTERED = {"registered", "best_is_production", "production_loads", "final_prediction"}
EVERYTHING = set(CHECK_IDS)
# student -> (status, the checks that fail; every other check passes with its full points)
EXPECTED = {
    "crash-halfway": ("error", NOT_REGISTERED),
    "infinite-loop": ("timeout", {"runs"} | NOT_REGISTERED),
    "kernel-dies": ("kernel_died", EVERYTHING),
    "missing-metric": ("graded", {"run_fields"}),
    "nine-runs": ("graded", {"runs"}),
    "no-models": ("error", {"run_models", "metrics_honest"} | NOT_REGISTERED),
    "no-notebook": ("missing_notebook", EVERYTHING),
    "not-json": ("invalid_notebook", EVERYTHING),
    "reference": ("graded", set()),
    "remote-server": ("error", EVERYTHING),
    "wrong-version": ("graded", {"best_is_production"}),
}
EXECUTED = {
    student for student, (status, _) in EXPECTED.items() if status not in ("missing_notebook", "invalid_notebook")
}


def grade(submissions: Path, out: Path, *options: str) -> list[dict]:
    argv = ["grade", str(submissions), "--rubric", str(RUBRIC_PATH), "--out", str(out), "--jobs", "2"]
    assert main([*argv, "--timeout", str(TIMEOUT), *options]) == 0
    with (out / "gradebook.csv").open() as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("graded")
    return out, grade(EXAMPLES, out)


def result_of(out: Path, student: str) -> dict:
    return json.loads((out / student / "result.json").read_text())


def test_gradebook_has_one_sorted_row_per_sample_and_the_contracts_columns(graded):
    _, rows = graded
    assert list(rows[0]) == ["student", "status", "score", "max_score", *CHECK_IDS, "flags"]
    assert [row["student"] for row in rows] == sorted(EXPECTED)


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_each_sample_gets_its_exact_status_and_checks(graded, student):
    out, rows = graded
    status, failing = EXPECTED[student]
    row = next(row for row in rows if row["student"] == student)
    result = result_of(out, student)
    assert (row["status"], result["status"]) == (status, status), result["message"]
    passed = {check["id"]: check["passed"] for check in result["checks"]}
    assert {check for check, ok in passed.items() if not ok} == failing, result["checks"]
    expected_points = {check: 0 if check in failing else RUBRIC.points[check] for check in CHECK_IDS}
    assert {check: int(row[check]) for check in CHECK_IDS} == expected_points
    assert int(row["score"]) == result["score"] == sum(expected_points.values())
    assert int(row["max_score"]) == RUBRIC.max_score


def test_result_json_follows_the_schema(graded):
    out, _ = graded
    for student in EXPECTED:
        result = result_of(out, student)
        assert set(result) == {"student", "status", "score", "max_score", "message", "checks", "flags", "sandbox"}
        assert result["student"] == student
        assert [check["id"] for check in result["checks"]] == list(CHECK_IDS)
        for check in result["checks"]:
            assert set(check) == {"id", "passed", "points", "max_points", "message"}
            assert check["message"]
        assert set(result["sandbox"]) == {"isolated", "description"} and result["sandbox"]["description"]
        assert ("not_isolated" in result["flags"]) is (not result["sandbox"]["isolated"])


def test_statuses_carry_a_message_saying_what_happened(graded):
    out, _ = graded
    assert "cell 4 raised NameError" in result_of(out, "crash-halfway")["message"]
    assert f"longer than the {TIMEOUT} s" in result_of(out, "infinite-loop")["message"]
    assert "kernel died in cell 1: it ended with exit code 1" in result_of(out, "kernel-dies")["message"]
    assert "not a valid notebook" in result_of(out, "not-json")["message"]
    assert "found: none" in result_of(out, "no-notebook")["message"]
    assert "points MLflow elsewhere" in result_of(out, "remote-server")["message"]
    assert "http://127.0.0.1:5000" in result_of(out, "remote-server")["message"]


def test_what_a_timed_out_notebook_logged_is_still_graded(graded):
    out, _ = graded
    checks = {check["id"]: check for check in result_of(out, "infinite-loop")["checks"]}
    assert checks["runs"]["message"].startswith("found 3 runs")
    assert checks["run_models"]["passed"]
    assert "re-scored models matches the grader's" in checks["metrics_honest"]["message"]


def test_reference_is_rescored_by_the_probe_and_its_prediction_verified(graded):
    out, _ = graded
    checks = {check["id"]: check for check in result_of(out, "reference")["checks"]}
    assert "predicted all 4128 test rows" in checks["production_loads"]["message"]
    assert "the Production model's predictions of the first 5 rows of X_test" in checks["final_prediction"]["message"]
    assert "matches the grader's" in checks["metrics_honest"]["message"]
    assert result_of(out, "reference")["flags"] == (
        [] if result_of(out, "reference")["sandbox"]["isolated"] else ["not_isolated"]
    )


def test_feedback_shows_expected_and_found_with_the_best_run_and_production_version(graded):
    out, _ = graded
    html = (out / "wrong-version" / "feedback.html").read_text()
    check = next(check for check in result_of(out, "wrong-version")["checks"] if check["id"] == "best_is_production")
    assert "the top run of search_runs ordered by rmse_test ASC is the run of the version in stage" in html
    assert check["message"].split(",")[0] in html  # "best run is <id> (...) with rmse_test=..."
    assert "version 2 in Production comes from run" in html
    assert "Version in stage &#39;Production&#39; of" in html and "version 2, from run" in html
    assert html.count('class="fail"') == 1 and html.count('class="pass"') == len(CHECK_IDS) - 1
    assert "data:image/png;base64," in html
    sandbox = result_of(out, "wrong-version")["sandbox"]
    assert ("NOT graded in an isolated sandbox" in html) is (not sandbox["isolated"])


def test_executed_notebooks_are_kept_with_their_outputs(graded):
    out, _ = graded
    for student in EXECUTED:
        assert (out / student / f"{student}.ipynb").is_file(), student
    reference = nbformat.read(out / "reference" / "reference.ipynb", as_version=4)
    last = [cell for cell in reference.cells if cell.cell_type == "code"][-1]
    assert last.outputs and last.outputs[-1]["output_type"] == "execute_result"


def test_artifacts_are_deleted_and_each_submission_keeps_little_disk(graded):
    out, _ = graded
    for student in EXPECTED:
        folder = out / student
        assert not (folder / "work").exists(), student
        kept = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        assert kept <= RUBRIC.kept_bytes, (student, kept)


def test_regrading_gives_the_same_gradebook_rows_and_can_keep_artifacts(graded, tmp_path):
    _, rows = graded
    again = tmp_path / "again"
    again.mkdir()
    for entry in ("crash-halfway.zip", "kernel-dies.ipynb", "not-json.ipynb"):
        shutil.copy(EXAMPLES / entry, again / entry)
    second = grade(again, tmp_path / "out", "--keep-artifacts")
    assert second == [row for row in rows if row["student"] in {"crash-halfway", "kernel-dies", "not-json"}]
    assert (tmp_path / "out" / "crash-halfway" / "work" / "mlflow.db").is_file()  # kept, as asked
