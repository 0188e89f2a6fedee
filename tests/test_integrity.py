"""Integrity, round 2: every way found to score points without doing the work, or to cost another student a row.

Each sample below is one attack, written after one set-up cell (the homework's split, a ``train_and_log`` that
can lie about rmse_test, ``promote``), and all are graded in one batch with ``--jobs 2`` under the adversarial
suite's small rubric (two runs suffice). Each asserts its status, every check, its flags and the gradebook row.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from tests.isolation import require_bwrap
from tests.test_adversarial import make_rubric

REPO = Path(__file__).resolve().parents[1]
SET_UP = """
import mlflow
from mlflow import MlflowClient
from sklearn.datasets import fetch_california_housing
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeRegressor

mlflow.set_experiment("homework-195")
X, y = fetch_california_housing(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)


def train_and_log(model_type, model, lie=0.0):
    \"\"\"One run; ``lie`` is added to the rmse_test it logs.\"\"\"
    with mlflow.start_run() as run:
        predicted = model.fit(X_train, y_train).predict(X_test)
        mlflow.log_param("model_type", model_type)
        mlflow.log_metric("rmse_test", root_mean_squared_error(y_test, predicted) + lie)
        mlflow.log_metric("r2_test", r2_score(y_test, predicted))
        info = mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], skops_trusted_types=["sklearn.tree._tree.Tree"]
        )
    return run.info.run_id, info.model_uri


def promote(model_uri):
    version = mlflow.register_model(model_uri, "housing-best")
    MlflowClient().transition_model_version_stage("housing-best", version.version, "Production")
"""
PREDICT = 'mlflow.pyfunc.load_model("models:/housing-best/Production").predict(X_test.head(5))'
THREE_RUNS = """
linear_run, linear_model = train_and_log("linear", LinearRegression())
tree_run, tree_model = train_and_log("decision_tree", DecisionTreeRegressor(max_depth=8, random_state=42))
ridge_run, ridge_model = train_and_log("ridge", Ridge(alpha=1e5))
"""

TWO_RUNS = """
linear_run, linear_model = train_and_log('linear', LinearRegression())
ridge_run, ridge_model = train_and_log('ridge', Ridge(alpha=1e5))
promote(linear_model)
"""


@dataclass(frozen=True)
class Sample:
    """An attack: the cells after the set-up, and what the grader must make of it."""

    cells: tuple[str, ...]
    status: str = "graded"
    failing: frozenset[str] = frozenset()
    flags: tuple[str, ...] = ()
    tags_of_last: tuple[str, ...] = ()
    saved_output_of_last: str | None = None


SAMPLES_2 = {
    "honest-control": Sample((THREE_RUNS + "promote(tree_model)", PREDICT)),
    # 1. The version's storage_location, which MLflow serves from, points at the worst model's files.
    "storage-location": Sample(
        (
            THREE_RUNS + "promote(tree_model)",
            """import sqlite3
ridge_files = MlflowClient().get_logged_model(ridge_model.split("/")[-1]).artifact_location
with sqlite3.connect("mlflow.db") as store:
    store.execute("UPDATE model_versions SET storage_location = ?", (ridge_files,))""",
            PREDICT,
        ),
        failing=frozenset({"best_is_production", "metrics_honest"}),
        flags=("metrics_honest",),
    ),
    # 2. Every run but the linear one logs rmse_test + 0.5, so linear looks best and goes to Production.
    "lies-on-other-runs": Sample(
        (
            """linear_run, linear_model = train_and_log("linear", LinearRegression())
tree = DecisionTreeRegressor(max_depth=8, random_state=42)
tree_run, tree_model = train_and_log("decision_tree", tree, lie=0.5)
promote(linear_model)""",
            PREDICT,
        ),
        failing=frozenset({"best_is_production", "metrics_honest"}),
        flags=("metrics_honest",),
    ),
    # 3. Runs whose "model" is a logged model marked READY with no files saved.
    "ready-without-files": Sample(
        (
            """linear_run, linear_model = train_and_log("linear", LinearRegression())
promote(linear_model)
client, experiment = MlflowClient(), mlflow.get_experiment_by_name("homework-195").experiment_id
for _ in range(2):
    with mlflow.start_run() as run:
        mlflow.log_param("model_type", "ghost")
        mlflow.log_metrics({"rmse_test": 0.9, "r2_test": 0.1})
        empty = client.create_logged_model(experiment, source_run_id=run.info.run_id)
        client.finalize_logged_model(empty.model_id, "READY")""",
            PREDICT,
        ),
        failing=frozenset({"run_models"}),
    ),
    # 4. A last cell that prints five invented numbers with two decimals.
    "made-up-numbers": Sample(
        (
            TWO_RUNS,
            "print([1.53, 2.08, 1.77, 2.41, 0.98])",
        ),
        failing=frozenset({"final_prediction"}),
    ),
    # 5. The last cell is skipped by nbclient (tag skip-execution) and carries the true predictions as a saved
    #    output, computed at home; run here, it would raise.
    "saved-output": Sample(
        (
            TWO_RUNS,
            "raise RuntimeError('never run here')",
        ),
        failing=frozenset({"final_prediction"}),
        tags_of_last=("skip-execution",),
        saved_output_of_last="TRUE_PREDICTIONS",
    ),
    # 9. A model_type that matplotlib would typeset as a formula, with a typo in it.
    "mathtext-name": Sample(
        (
            TWO_RUNS.replace("'linear'", "'$\\\\frac{1}{2$ linear'"),
            PREDICT,
        ),
    ),
    # 18.2. v1's logged model deleted after it was registered; v2 from the best run in Production.
    "dangling-version": Sample(
        (
            """ridge_run, ridge_model = train_and_log("ridge", Ridge(alpha=1e5))
linear_run, linear_model = train_and_log("linear", LinearRegression())
mlflow.register_model(ridge_model, "housing-best")
MlflowClient().delete_logged_model(ridge_model.split("/")[-1])
promote(linear_model)""",
            PREDICT,
        ),
        failing=frozenset({"run_models"}),  # the ridge run's model is gone; Production works
    ),
    # 6. Folders nested deeper than shutil.rmtree can recurse, left in the working folder to crash its removal.
    "deep-folders": Sample(
        (
            TWO_RUNS,
            """import os
top = os.getcwd()
for _ in range(1500):
    os.mkdir("d")
    os.chdir("d")
os.chdir(top)""",
            PREDICT,
        ),
    ),
}
# 7. A submission named like the grader's own output.
RESERVED = "gradebook.csv"


def true_predictions() -> str:
    """What the linear model's Production version predicts for X_test.head(5), as numpy shows it."""
    from sklearn.datasets import fetch_california_housing
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    features, target = fetch_california_housing(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, _ = train_test_split(features, target, test_size=0.2, random_state=42)
    return repr(LinearRegression().fit(x_train, y_train).predict(x_test.head(5)))


def notebook_of(sample: Sample) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell(source) for source in (SET_UP, *sample.cells)]
    last = cells[-1]
    last.metadata["tags"] = list(sample.tags_of_last)
    if sample.saved_output_of_last:
        text = true_predictions() if sample.saved_output_of_last == "TRUE_PREDICTIONS" else sample.saved_output_of_last
        last.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=9)]
        last.execution_count = 9
    return nbformat.v4.new_notebook(cells=cells)


@dataclass
class Graded:
    out: Path
    completed: subprocess.CompletedProcess
    rows: dict[str, dict]
    peak_bytes: int  # the grader process's own peak resident memory

    def result(self, student: str) -> dict:
        return json.loads((self.out / student / "result.json").read_text())


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Graded:
    require_bwrap("the integrity batch")
    root = tmp_path_factory.mktemp("integrity")
    submissions, out = root / "submissions", root / "out"
    submissions.mkdir()
    for student, sample in SAMPLES_2.items():
        nbformat.write(notebook_of(sample), submissions / f"{student}.ipynb")
    (submissions / RESERVED).mkdir()
    nbformat.write(notebook_of(SAMPLES_2["honest-control"]), submissions / RESERVED / "homework-195.ipynb")
    command = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(make_rubric(root))]
    command += ["--out", str(out), "--jobs", "2", "--timeout", "120"]
    completed, peak = run_watching_memory(command)
    with (out / "gradebook.csv").open() as stream:
        rows = {row["student"]: row for row in csv.DictReader(stream)}
    return Graded(out, completed, rows, peak)


def run_watching_memory(command: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run the grader; return how it ended and its own peak resident memory (VmHWM), read just before it exits."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0

    def watch() -> None:
        nonlocal peak
        while process.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = Path(f"/proc/{process.pid}/status").read_text()
                line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
                peak = max(peak, int(line.split()[1]) * 1024)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = process.communicate(timeout=900)
    watcher.join()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), peak


def test_the_batch_finishes_with_a_row_for_everyone(graded):
    assert graded.completed.returncode == 0, graded.completed.stderr[-3000:]
    assert set(graded.rows) == {*SAMPLES_2, RESERVED}
    assert "Traceback" not in graded.completed.stderr


@pytest.mark.parametrize("student", sorted(SAMPLES_2))
def test_each_attack_scores_only_what_was_verified(graded, student):
    sample = SAMPLES_2[student]
    result = graded.result(student)
    assert result["status"] == sample.status, result["message"]
    failed = {check["id"] for check in result["checks"] if not check["passed"]}
    assert failed == sample.failing, {check["id"]: check["message"] for check in result["checks"]}
    assert sorted(result["flags"]) == sorted(sample.flags)
    row = graded.rows[student]
    assert int(row["score"]) == result["score"] and row["flags"] == " ".join(result["flags"])
    assert result["sandbox"]["isolated"] is True


def test_feedback_says_both_numbers_when_logged_and_rescored_disagree(graded):
    checks = {check["id"]: check["message"] for check in graded.result("lies-on-other-runs")["checks"]}
    assert "re-scoring disagrees" in checks["best_is_production"]
    assert "does NOT match" in checks["metrics_honest"] and "decision_tree" in checks["metrics_honest"]


def test_the_grader_stays_under_a_gigabyte(graded):
    assert 0 < graded.peak_bytes < 2**30, graded.peak_bytes


def test_a_submission_named_like_the_gradebook_gets_a_row_not_the_gradebook(graded):
    assert graded.rows[RESERVED]["status"] == "invalid_name"
    assert (graded.out / "gradebook.csv").is_file()


def test_student_text_is_never_typeset(graded):
    page = (graded.out / "mathtext-name" / "feedback.html").read_text()
    assert "data:image/png;base64," in page, "the plot must be drawn, with the name as plain text"
    assert "$\\frac{1}{2$ linear" in page


def test_dangling_version_names_the_missing_model(graded):
    checks = {check["id"]: check["message"] for check in graded.result("dangling-version")["checks"]}
    assert "ridge" in checks["run_models"]


def test_what_is_kept_per_student_fits_the_rubric(graded):
    kept = make_rubric_kept_bytes()
    for student in SAMPLES_2:
        folder = graded.out / student
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        assert size <= kept, (student, size)


def make_rubric_kept_bytes() -> int:
    from grader.rubric import load

    return load(REPO / "homework" / "homework-195.rubric.toml").kept_bytes


def test_no_student_process_survives(graded):
    mine = str(graded.out).encode()
    survivors = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mine in Path(f"/proc/{entry}/cmdline").read_bytes():
                survivors.append(entry)
        except OSError:
            continue
    assert not survivors
