"""Hostile submissions, graded in one batch the way a course would: ``python -m grader grade ... --jobs 2``.

Each sample in tests/adversarial/ is one attack (its first cell says which). The batch must finish, give each the
right status, let no check pass that the attack should not earn, and leave no trace of the attack on the machine.
Placeholders in the samples (__OUT__, __SUBMISSIONS__, __OTHER_STORE__, ...) are filled in per run, so the
attacks aim at this batch's real paths. The batch needs bubblewrap; the fallback test below never does.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from grader import sandbox
from grader.rubric import load
from tests.isolation import require_bwrap

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parent / "adversarial"
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"
CHECK_IDS = load(RUBRIC).check_ids
TIMEOUT_SECONDS = 120
# Smaller than the homework's so the batch stays short: two runs suffice, a stuck cell gives up sooner.
TEST_RUBRIC_VALUES = {"min_runs": 2, "cell_seconds": 45, "memory_mb": 1536, "max_processes": 128, "probe_seconds": 60}
MANY_CELLS = 10_000
ALL_CHECKS = set(CHECK_IDS)


@dataclass(frozen=True)
class Expected:
    statuses: tuple[str, ...]
    may_pass: frozenset[str] = frozenset()  # checks allowed to pass; every other one must fail
    must_pass: frozenset[str] = frozenset()
    flags: tuple[str, ...] = ()


EVERYTHING_BUT_HONESTY = frozenset(ALL_CHECKS - {"metrics_honest"})
EXPECTED = {
    "honest": Expected(("graded",), frozenset(ALL_CHECKS), frozenset(ALL_CHECKS)),
    "faked-metrics": Expected(("graded",), EVERYTHING_BUT_HONESTY, flags=("metrics_honest",)),
    "sql-edit": Expected(("graded",), EVERYTHING_BUT_HONESTY, flags=("metrics_honest",)),
    "forged-probe": Expected(("graded",), EVERYTHING_BUT_HONESTY, flags=("metrics_honest",)),
    "monkeypatch": Expected(
        ("graded",), frozenset(ALL_CHECKS - {"best_is_production"}), frozenset({"metrics_honest", "production_loads"})
    ),
    "store-symlink": Expected(("graded",)),
    "network": Expected(("graded",)),
    "victim": Expected(("graded",)),
    "read-other": Expected(("graded",), frozenset({"experiment", "run_models", "registered"})),
    "write-outside": Expected(("graded",)),
    "overwrite-gradebook": Expected(("graded",)),
    "memory-bomb": Expected(("error",)),
    "fork-bomb": Expected(("error",)),
    "infinite-loop": Expected(("timeout",)),
    "os-exit": Expected(("kernel_died",)),
    "huge-output": Expected(("graded",)),
    "many-cells": Expected(("graded", "timeout")),  # finishing or running out of time are both fair
    "zip-slip": Expected(("unsafe_archive",)),
    "symlink": Expected(("unsafe_archive",)),
}


@dataclass
class Batch:
    root: Path
    submissions: Path
    out: Path
    token: str
    connections: list
    completed: subprocess.CompletedProcess

    def result(self, student: str) -> dict:
        return json.loads((self.out / student / "result.json").read_text())

    def outputs(self, student: str) -> str:
        """Everything the graded notebook printed, as the grader saved it."""
        notebook = nbformat.read(self.out / student / f"{student}.ipynb", as_version=4)
        texts = []
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                texts.append(output.get("text", "") + json.dumps(output.get("data", {})))
        return "\n".join(texts)


def make_rubric(tmp: Path) -> Path:
    text = RUBRIC.read_text()
    for key, value in TEST_RUBRIC_VALUES.items():
        text, count = re.subn(rf"^{key}\s*=\s*\d+", f"{key} = {value}", text, flags=re.MULTILINE)
        assert count == 1, f"{RUBRIC} no longer has a '{key} = N' line"
    path = tmp / "rubric.toml"
    path.write_text(text)
    return path


def stage_samples(submissions: Path, placeholders: dict[str, str]) -> None:
    """Copy the samples with this run's paths filled in; generate the 10,000-cell notebook (1.5 MB as a file)."""
    for source in SAMPLES.rglob("*"):
        target = submissions / source.relative_to(SAMPLES)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif source.suffix == ".zip":
            shutil.copyfile(source, target)
        else:
            text = source.read_text()
            for placeholder, value in placeholders.items():
                text = text.replace(placeholder, value)
            target.write_text(text)
    many = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1") for _ in range(MANY_CELLS)])
    nbformat.write(many, submissions / "many-cells.ipynb")


def make_other_store(folder: Path) -> Path:
    """Someone else's store on the grading machine: experiment homework-195 with two runs that have every field."""
    from mlflow import MlflowClient

    store = folder / "mlflow.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SQLAlchemy's, raised while MLflow sets up its store
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        experiment = client.create_experiment("homework-195", artifact_location=str(folder / "artifacts"))
    for rmse in (0.5, 0.6):
        run_id = client.create_run(experiment).info.run_id
        client.log_param(run_id, "model_type", "linear")
        client.log_metric(run_id, "rmse_test", rmse)
        client.log_metric(run_id, "r2_test", 0.7)
        client.set_terminated(run_id)
    return store


def listen(connections: list) -> tuple[socket.socket, int]:
    """A service on the grading machine's loopback that records every connection made to it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end of the batch
            while True:
                connections.append(listener.accept()[1])

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Batch:
    require_bwrap("the adversarial batch")
    root = tmp_path_factory.mktemp("adversarial")
    submissions, out = root / "submissions", root / "out"
    submissions.mkdir()
    connections: list = []
    listener, port = listen(connections)
    rubric = make_rubric(root)
    token = uuid.uuid4().hex
    stage_samples(
        submissions,
        {
            "__SUBMISSIONS__": str(submissions),
            "__OUT__": str(out),
            "__REPO__": str(REPO),
            "__RUBRIC__": str(rubric),
            "__TOKEN__": token,
            "__LISTENER_PORT__": str(port),
            "__OTHER_STORE__": str(make_other_store(root / "teacher")),
        },
    )
    command = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(rubric), "--out", str(out)]
    command += ["--jobs", "2", "--timeout", str(TIMEOUT_SECONDS)]
    try:
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    finally:
        listener.close()
    return Batch(root, submissions, out, token, connections, completed)


def test_the_batch_finishes_and_grades_everyone(batch):
    assert batch.completed.returncode == 0, batch.completed.stderr[-3000:]
    with (batch.out / "gradebook.csv").open() as stream:
        students = {row["student"] for row in csv.DictReader(stream)}
    assert students == set(EXPECTED)


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_status_and_checks(batch, student):
    expected = EXPECTED[student]
    result = batch.result(student)
    assert result["status"] in expected.statuses, result["message"]
    passed = {check["id"] for check in result["checks"] if check["passed"]}
    assert passed <= expected.may_pass, f"checks passed that the attack must not earn: {passed - expected.may_pass}"
    assert expected.must_pass <= passed, f"checks failed that should pass: {expected.must_pass - passed}"
    assert set(expected.flags) <= set(result["flags"])
    assert result["sandbox"]["isolated"] is True


@pytest.mark.parametrize("student", ["faked-metrics", "sql-edit", "forged-probe"])
def test_faked_metrics_are_caught_with_both_numbers(batch, student):
    honesty = next(check for check in batch.result(student)["checks"] if check["id"] == "metrics_honest")
    assert not honesty["passed"]
    assert "0.01" in honesty["message"], "the feedback must show the logged number"
    assert re.search(r"\b(0\.[1-9]|1\.)\d*", honesty["message"]), "and the grader's own re-scoring"


def test_monkeypatched_acceptance_passed_only_inside_the_notebook(batch):
    assert "acceptance criterion passed" in batch.outputs("monkeypatch")
    best = next(check for check in batch.result("monkeypatch")["checks"] if check["id"] == "best_is_production")
    assert not best["passed"]


def test_no_connection_reached_the_grading_machine(batch):
    assert "reached the grading machine" not in batch.outputs("network")
    assert not batch.connections, "the listener on 127.0.0.1 saw a connection from a submission"


def test_nothing_of_others_is_readable(batch):
    assert "0 of 9 files readable" in batch.outputs("read-other")
    # Nor written: the grader would write through the planted link if it opened probe.log after the notebook.
    assert (batch.submissions / "victim" / "secret.txt").read_text() == f"VICTIM-SECRET-{batch.token}\n"


def test_the_grader_leaks_nothing_through_planted_links(batch):
    for path in (batch.out / "read-other").rglob("*"):
        if path.is_file():
            assert batch.token not in path.read_text(errors="replace"), f"the victim's secret leaked into {path}"


def test_nothing_is_written_outside_the_working_directory(batch):
    assert "0 files written outside" in batch.outputs("write-outside")
    planted = [
        batch.submissions / "planted.txt",
        batch.submissions / "victim" / "planted.txt",
        batch.out / "planted.txt",
        batch.out / "victim" / "planted.txt",
        batch.out / "write-outside" / "planted.txt",
        REPO / "grader" / "planted.py",
        Path(f"/tmp/planted-{batch.token}"),
        Path(f"/etc/planted-{batch.token}"),
    ]
    assert not [path for path in planted if path.exists()]


def test_the_grader_reads_no_store_but_the_submissions_own(batch):
    found = {check["id"]: check["message"] for check in batch.result("store-symlink")["checks"]}
    assert "found experiment" not in found["experiment"], "the grader followed mlflow.db to another store"


def test_the_gradebook_and_other_results_are_the_graders(batch):
    assert "overwrote" not in batch.outputs("overwrite-gradebook")
    with (batch.out / "gradebook.csv").open() as stream:
        rows = {row["student"]: row for row in csv.DictReader(stream)}
    assert rows["overwrite-gradebook"]["score"] == "0"
    assert batch.result("overwrite-gradebook")["score"] == 0
    assert batch.result("victim")["student"] == "victim"


def test_resource_attacks_end_in_their_own_status(batch):
    assert "MemoryError" in batch.result("memory-bomb")["message"]
    assert "the kernel survived its memory bomb" in batch.outputs("memory-bomb"), "the cap must stop it, not kill it"
    assert re.search(r"BlockingIOError|Resource temporarily unavailable", batch.result("fork-bomb")["message"])


def test_huge_output_is_truncated_everywhere(batch):
    sizes = {path.name: path.stat().st_size for path in (batch.out / "huge-output").rglob("*") if path.is_file()}
    assert sizes and max(sizes.values()) < 2_000_000, sizes


def test_archives_never_unpack_outside(batch):
    assert "zip slip" in batch.result("zip-slip")["message"]
    assert "symbolic link" in batch.result("symlink")["message"]
    assert not list(batch.root.rglob("zip-slip-escaped.txt"))
    assert not (batch.root.parent / "zip-slip-escaped.txt").exists()


def test_no_student_process_survives_the_batch(batch):
    # Only this batch's: other graders may be running on the machine.
    uids = {sandbox.sandbox_uid(batch.out / student / "work") for student in EXPECTED}
    survivors = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = Path(f"/proc/{entry}").stat().st_uid
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # gone while we looked
        if uid in uids or str(batch.out).encode() in cmdline:
            survivors.append((int(entry), uid, cmdline[:200]))
    assert not survivors


def test_without_bwrap_every_report_says_the_sandbox_was_off(tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    shutil.copyfile(SAMPLES / "victim" / "homework-195.ipynb", submissions / "plain.ipynb")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(RUBRIC), "--out", str(out)]
    environment = {**os.environ, "GRADER_SANDBOX": "off"}
    completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((out / "plain" / "result.json").read_text())
    assert result["status"] == "graded"
    assert result["sandbox"]["isolated"] is False
    assert result["sandbox"]["description"].startswith("OFF:")
    assert "not_isolated" in result["flags"]
    assert "OFF:" in (out / "plain" / "feedback.html").read_text()
