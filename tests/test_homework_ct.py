"""homework-ct (lessons 07–08: data versions, a gate, @champion): one source, a solution that runs and leaves what
the task asks, and sample submissions graded by the rubric file alone to their exact points."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from grader.assign import BEGIN, END, render, targets
from tests.notebooks import execute, unexplained_warnings
from tests.test_homework import code_of, solution_lines
from tests.test_lessons import LESSONS, log_model_calls

REPO = Path(__file__).resolve().parents[1]
HOMEWORK = REPO / "homework"
NAME = "homework-ct"
SOURCE = HOMEWORK / "src" / f"{NAME}.ipynb"
STUDENT = HOMEWORK / f"{NAME}.ipynb"
SOLUTION = HOMEWORK / "solution" / f"{NAME}.ipynb"
RUBRIC_PATH = HOMEWORK / f"{NAME}.rubric.toml"
EXAMPLES = HOMEWORK / "examples-ct"
RUBRIC = tomllib.loads(RUBRIC_PATH.read_text())
POINTS = {check["id"]: check["points"] for check in RUBRIC["checks"]}
CHECK = {check["id"]: check for check in RUBRIC["checks"]}

# student -> the checks that fail; every other check gets its full points. homework/examples-ct/README.md shows the
# same table (a test keeps them equal).
EXPECTED_FAILURES = {
    "reference": set(),
    "no-dataset-input": {"data_v1_logged", "champion_data"},
    "gate-ignored": {"champion_gated"},
    "verdict-by-hand": {"evaluated"},
    "no-drift-report": {"drift_report"},
    "wrong-alias": {"champion_data", "champion_gated", "champion_loads", "final_prediction"},
}
# The grader's vocabulary of check kinds (issue 16, branch issue-16c) is what grades this rubric: before it is
# merged, the grader on this branch only knows homework-195's fixed checks.
CHECK_KINDS_MISSING = importlib.util.find_spec("grader.checks") is None
needs_check_kinds = pytest.mark.skipif(
    CHECK_KINDS_MISSING,
    reason="grader.checks (the rubric's check kinds, issue-16c) is not in this grader yet: homework-ct's rubric "
    "cannot be graded before that branch is merged",
)


def markdown_of(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


# --- one source, two generated notebooks -----------------------------------------------------------------------


def test_generated_notebooks_are_what_the_generator_makes_now():
    assert targets(SOURCE) == (STUDENT, SOLUTION)
    student, solution = render(nbformat.read(SOURCE, as_version=4))
    assert STUDENT.read_text() == nbformat.writes(student) + "\n", "run: python -m grader.assign " + str(SOURCE)
    assert SOLUTION.read_text() == nbformat.writes(solution) + "\n", "run: python -m grader.assign " + str(SOURCE)


def test_student_notebook_holds_no_solution_code_and_no_outputs():
    source_code = code_of(nbformat.read(SOURCE, as_version=4))
    student = nbformat.read(STUDENT, as_version=4)
    student_code = code_of(student)
    hidden = solution_lines(source_code)
    assert len(hidden) > 20  # the source does mark its solution
    student_lines = {line.strip() for line in student_code.splitlines()}
    assert [line for line in hidden if line in student_lines] == []
    assert BEGIN not in student_code and END not in student_code
    assert student_code.count("raise NotImplementedError()") == source_code.count(BEGIN) == 6
    for path in (SOURCE, STUDENT, SOLUTION, *EXAMPLES.glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert all(
            not cell.get("outputs") and cell.get("execution_count") is None for cell in cells if "outputs" in cell
        )


def test_sample_reference_submission_is_the_solution():
    assert (EXAMPLES / "reference.ipynb").read_text() == SOLUTION.read_text()


# --- the task, the rubric and the samples' README agree ----------------------------------------------------------


def test_grading_table_of_the_student_notebook_is_the_rubrics():
    text = markdown_of(nbformat.read(STUDENT, as_version=4))
    table = re.findall(r"^\| `([a-z0-9_]+)` \| (\d+) \|", text, flags=re.MULTILINE)
    assert [(check, int(points)) for check, points in table] == list(POINTS.items())
    assert sum(POINTS.values()) == RUBRIC["max_score"]
    assert "Acceptance criterion" in text and "get_model_version_by_alias" in text


def test_the_task_states_every_name_and_number_the_rubric_checks():
    text = markdown_of(nbformat.read(STUDENT, as_version=4))
    setup = code_of(nbformat.read(STUDENT, as_version=4))
    assert f'EXPERIMENT = "{CHECK["experiment"]["experiment"]}"' in setup
    assert f'MODEL_NAME = "{CHECK["champion_loads"]["model"]}"' in setup
    assert "test_size=0.2, random_state=42" in setup
    assert (RUBRIC["data"]["test_size"], RUBRIC["data"]["random_state"]) == (0.2, 42)
    assert f"MAX_RMSE, MIN_R2, MIN_IMPROVEMENT = {CHECK['champion_gated']['threshold']}," in setup
    assert f"`{CHECK['drift_report']['path']}`" in text and f"`{CHECK['drift_report']['contains']}`" in text
    assert "`semver` = `1.0.0`" in text and "`semver` = `1.1.0`" in text
    assert re.fullmatch(CHECK["semver_v1"]["pattern"], "1.0.0") and re.fullmatch(
        CHECK["semver_challenger"]["pattern"], "1.1.0"
    )
    assert "**exactly two versions**" in text and CHECK["versions"]["max_versions"] == 2
    assert '`context="training"`' in text or 'context="training"' in text
    assert f"`{CHECK['evaluated']['metric']}`" in text


def test_rubric_hints_are_given_in_english_and_spanish():
    for check in RUBRIC["checks"]:
        assert check["hint"].strip() and check["hint_es"].strip(), check["id"]
        assert check["hint"] != check["hint_es"], check["id"]


def test_samples_readme_shows_the_expected_points():
    readme = (EXAMPLES / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `") and "(" in line.split("|")[1]]
    header = next(line for line in readme.splitlines() if line.startswith("| Check (points)"))
    students = [cell.strip() for cell in header.strip("|").split("|")[1:]]
    assert set(students) == set(EXPECTED_FAILURES)
    shown = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        check, points = re.fullmatch(r"`([a-z0-9_]+)` \((\d+)\)", cells[0]).groups()
        assert POINTS[check] == int(points)
        shown[check] = dict(zip(students, cells[1:], strict=True))
    assert list(shown) == list(POINTS)
    for student, failing in EXPECTED_FAILURES.items():
        assert {check for check, marks in shown.items() if marks[student] == "0"} == failing, student
        score = sum(points for check, points in POINTS.items() if check not in failing)
        assert f"| graded | {score} / {RUBRIC['max_score']} |" in next(
            line for line in readme.splitlines() if line.startswith(f"| `{student}.ipynb`")
        )
    assert {path.stem for path in EXAMPLES.glob("*.ipynb")} == set(EXPECTED_FAILURES)


def test_the_student_edition_ships_the_homework_and_never_its_solution(tmp_path):
    from grader import release

    edition = tmp_path / "release"
    release.build(edition)
    assert (edition / "homework" / f"{NAME}.ipynb").read_text() == STUDENT.read_text()
    assert (edition / "homework" / f"{NAME}.rubric.toml").read_text() == RUBRIC_PATH.read_text()
    shipped = {str(path.relative_to(edition)) for path in edition.rglob("*") if path.is_file()}
    assert not [name for name in shipped if "examples-ct" in name or name.endswith(f"solution/{NAME}.ipynb")]
    assert f"src/{NAME}.ipynb" not in "\n".join(shipped)


def test_the_lessons_show_every_call_the_solution_makes():
    """A student meets in a lesson each function, method and import of the reference solution, and each log_model
    with the keywords the solution passes."""
    lessons = [nbformat.read(path, as_version=4) for path in LESSONS]
    lesson_code = "\n".join(code_of(lesson) for lesson in lessons)
    called = set()
    for node in ast.walk(ast.parse(code_of(nbformat.read(SOLUTION, as_version=4)))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called.add(node.func.attr)
        elif isinstance(node, ast.ImportFrom):
            called |= {alias.name for alias in node.names}
    assert {"log_input", "evaluate", "validate_evaluation_results", "set_registered_model_alias"} <= called
    assert sorted(name for name in called if name not in lesson_code) == []
    shown = [call for lesson in LESSONS for call in log_model_calls(lesson)]
    for flavor, keywords in log_model_calls(SOLUTION):
        assert any(flavor == f and keywords <= k for f, k in shown), (flavor, keywords)


# --- the solution runs and leaves what the task asks (checked with MLflow's client, not the grader) -----------------


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("solution")
    executed = execute(SOLUTION, workdir, timeout=300)
    return workdir, executed


@pytest.mark.slow
def test_the_solution_runs_without_an_unexplained_warning(solved):
    _, executed = solved
    errors = [o for cell in executed.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    assert unexplained_warnings(executed) == []
    last = [cell for cell in executed.cells if cell.cell_type == "code"][-1]
    assert last.outputs[-1]["output_type"] == "execute_result"
    assert len(re.findall(r"\d+\.\d+", last.outputs[-1]["data"]["text/plain"])) == 5


@pytest.mark.slow
def test_the_solution_leaves_the_store_the_rubric_grades(solved):
    from mlflow import MlflowClient

    workdir, _ = solved
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model = CHECK["champion_loads"]["model"]
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{model}'")}
    assert sorted(versions) == ["1", "2"]
    champion = client.get_model_version_by_alias(model, "champion")
    assert str(champion.version) == "2" and champion.tags["gate"] == "passed"
    assert (client.get_model_version(model, "1").tags["semver"], champion.tags["semver"]) == ("1.0.0", "1.1.0")
    experiment = client.get_experiment_by_name(CHECK["experiment"]["experiment"])
    runs = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}
    digests = {
        version: [
            i.dataset.digest for i in runs[versions[version].run_id].inputs.dataset_inputs if _context(i) == "training"
        ]
        for version in versions
    }
    # The rubric's digests are the ones MLflow computed for the given data versions, in the solution's store.
    assert digests["1"] == CHECK["data_v1_logged"]["digests"]
    assert digests["2"] == CHECK["champion_data"]["digests"][:1]
    rmse = {version: runs[versions[version].run_id].data.metrics["root_mean_squared_error"] for version in versions}
    assert rmse["2"] <= CHECK["champion_gated"]["threshold"] < rmse["1"]
    reports = [run for run in runs.values() if any(a.path == "drift" for a in client.list_artifacts(run.info.run_id))]
    assert len(reports) == 1
    report = client.download_artifacts(reports[0].info.run_id, CHECK["drift_report"]["path"], str(workdir))
    with open(report) as stream:
        rows = list(csv.DictReader(stream))
    assert [row["feature"] for row in rows][-2:] == ["Latitude", "Longitude"] and len(rows) == 8
    assert {"ks_statistic", "p_value", "p_holm", "drifted"} <= set(rows[0])
    assert all(row["drifted"] == "True" for row in rows if row["feature"] in ("Latitude", "Longitude"))


def _context(dataset_input) -> str:
    return next((tag.value for tag in dataset_input.tags if tag.key == "mlflow.data.context"), "")


# --- graded by the rubric alone ---------------------------------------------------------------------------------

# Long enough for a sample under two parallel jobs on a busy 2-core machine (the solution takes ~25 s alone).
TIMEOUT = 240


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from grader.__main__ import main

    out = tmp_path_factory.mktemp("graded-ct")
    argv = ["grade", str(EXAMPLES), "--rubric", str(RUBRIC_PATH), "--out", str(out), "--jobs", "2"]
    assert main([*argv, "--timeout", str(TIMEOUT)]) == 0
    with (out / "gradebook.csv").open() as stream:
        return out, {row["student"]: row for row in csv.DictReader(stream)}


@pytest.mark.slow
@needs_check_kinds
@pytest.mark.parametrize("student", sorted(EXPECTED_FAILURES))
def test_each_sample_gets_its_exact_points_from_the_rubric_alone(graded, student):
    out, rows = graded
    failing = EXPECTED_FAILURES[student]
    result = json.loads((out / student / "result.json").read_text())
    assert result["status"] == rows[student]["status"] == "graded", result["message"]
    passed = {check["id"]: check["passed"] for check in result["checks"]}
    assert list(passed) == list(POINTS)
    assert {check for check, ok in passed.items() if not ok} == failing, result["checks"]
    expected = {check: 0 if check in failing else points for check, points in POINTS.items()}
    assert {check: int(rows[student][check]) for check in POINTS} == expected
    assert int(rows[student]["score"]) == result["score"] == sum(expected.values())
    assert int(rows[student]["max_score"]) == RUBRIC["max_score"]
    assert "metrics_honest" not in result["flags"]  # no sample lies about a metric


@pytest.mark.slow
@needs_check_kinds
def test_the_failed_checks_say_what_the_grader_found(graded):
    out, _ = graded

    def message(student, check):
        return next(
            c["message"] for c in json.loads((out / student / "result.json").read_text())["checks"] if c["id"] == check
        )

    assert "failed" in message("gate-ignored", "champion_gated")
    assert "4181cb35" in message("reference", "data_v1_logged")
    assert "root_mean_squared_error" in message("reference", "evaluated")


@pytest.mark.slow
@needs_check_kinds
def test_the_unsolved_student_notebook_gets_only_the_experiment(tmp_path):
    from grader import grade_submission

    result = grade_submission(STUDENT, RUBRIC_PATH, tmp_path, student="unsolved")
    passed = {check.id for check in result.checks if check.passed}
    assert passed == {"experiment"} and result.score == POINTS["experiment"]
    assert "NotImplementedError" in result.message


@pytest.mark.slow
@needs_check_kinds
def test_the_spanish_self_check_gives_the_rubrics_spanish_hint(tmp_path):
    notebook = tmp_path / "no-drift-report.ipynb"
    notebook.write_text((EXAMPLES / "no-drift-report.ipynb").read_text())
    command = [sys.executable, "-m", "grader", "check", str(notebook), "--rubric", str(RUBRIC_PATH), "--lang", "es"]
    # Wide enough that rich prints each hint on one line of its table.
    environment = {**os.environ, "COLUMNS": "1000", "GRADER_SANDBOX": "off"}
    checked = subprocess.run(
        [*command, "--out", str(tmp_path / "out")], env=environment, capture_output=True, text=True, timeout=600
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert CHECK["drift_report"]["hint_es"][:80] in checked.stderr
    assert CHECK["drift_report"]["hint"][:80] not in checked.stderr
