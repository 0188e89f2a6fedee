"""The Dask executor on a distributed.LocalCluster of 2 workers: the same gradebook and OUT as the local pool, and a
worker killed mid-grade costs one retry on another worker, then an error row."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import shutil
import signal
import types
from pathlib import Path

import pytest

from grader import __main__ as cli
from grader import batch, dask_worker, regrade
from grader.result import Result
from grader.rubric import load

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "homework" / "examples"
RUBRIC = load(REPO / "homework" / "homework-195.rubric.toml")
TIMEOUT = 120  # as in test_grader_e2e: any sample, two at a time, on a busy 2-core machine
SAMPLES = ("reference.ipynb", "kernel-dies.ipynb", "not-json.ipynb")
MARKS = "GRADER_TEST_ATTEMPTS"  # where the fake grading below leaves one file per attempt
DEATHS = {"dies-once": 1, "dies-always": 99, "healthy": 0}  # attempts that kill their worker, per student


@pytest.fixture(autouse=True)
def own_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    regrade._secret.cache_clear()


def gradebook(out: Path) -> list[dict]:
    with (out / "gradebook.csv").open() as stream:
        return list(csv.DictReader(stream))


def comparable(out: Path) -> dict[str, str]:
    """Every file the grading left in OUT, with what differs between two gradings of one notebook masked: run
    and model ids (MLflow's random hex), the plot that shows them, the class report's time of writing, and OUT's
    own path."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and ".regrade" not in path.parts and path.name != "gradebook.csv":
            text = path.read_text(errors="replace")
            text = re.sub(r"\b(m-)?[0-9a-f]{32}\b|\b[0-9a-f]{8}\b", "<id>", text)  # ids, and the feedback's short ones
            text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "<plot>", text)  # its labels show short ids
            text = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "<time>", text)  # when index.html was written
            files[str(path.relative_to(out))] = text.replace(str(out), "<out>")
    return files


@pytest.mark.slow
def test_two_dask_workers_give_the_local_pools_gradebook_and_out(tmp_path):
    submissions = tmp_path / "class"
    submissions.mkdir()
    for sample in SAMPLES:
        shutil.copy(EXAMPLES / sample, submissions / sample)
    limits = dataclasses.replace(RUBRIC.limits, wall_seconds=TIMEOUT, cell_seconds=TIMEOUT)
    rubric = dataclasses.replace(RUBRIC, limits=limits)
    cli.grade_folder(submissions, rubric, tmp_path / "local", jobs=2)
    cli.grade_folder(submissions, rubric, tmp_path / "dask", executor=batch.DaskCluster(workers=2))

    assert gradebook(tmp_path / "dask") == gradebook(tmp_path / "local")
    assert [row["status"] for row in gradebook(tmp_path / "dask")] == ["kernel_died", "invalid_notebook", "graded"]
    local, dask = comparable(tmp_path / "local"), comparable(tmp_path / "dask")
    assert sorted(dask) == sorted(local)  # result.json, feedback.html and the executed notebook of each
    for name in local:
        if not name.endswith(".ipynb"):  # an executed notebook's outputs hold timings of its own
            assert dask[name] == local[name], name


def dies_while_grading(submission, rubric, keep_artifacts):
    """Stands in for batch.grade_on_worker: the first DEATHS[student] attempts kill their worker process."""
    marks = Path(os.environ[MARKS])
    attempt = len(list(marks.glob(f"{submission.student}.*")))
    (marks / f"{submission.student}.{attempt}.{os.getpid()}").touch()
    if attempt < DEATHS[submission.student]:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would
    return Result(submission.student, "graded", 1, rubric.max_score), None


def test_a_worker_killed_mid_grade_is_retried_once_elsewhere_then_becomes_an_error_row(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv(MARKS, str(marks))  # before the cluster starts: its workers inherit it
    monkeypatch.setattr(batch, "grade_on_worker", dies_while_grading)
    results = []
    # One killer per batch: two at once could meet on one restarted worker, where each death counts for both.
    # The second batch goes to a cluster the grader did not start, through its scheduler's address (whose
    # allowed_failures is Dask's default, 3, until the grader sets it).
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster:
        for batch_students, executor in (
            (("dies-once", "healthy"), batch.DaskCluster(workers=2)),
            (("dies-always",), batch.DaskCluster(scheduler=cluster.scheduler_address)),
        ):
            submissions = tmp_path / "-".join(batch_students)
            submissions.mkdir()
            for student in batch_students:
                (submissions / f"{student}.ipynb").write_text("{}")
            results += cli.grade_folder(submissions, RUBRIC, tmp_path / "out", executor=executor)

    assert {result.student: result.status for result in results} == {
        "dies-always": "error",
        "dies-once": "graded",
        "healthy": "graded",
    }
    attempts = {student: sorted(marks.glob(f"{student}.*")) for student in DEATHS}
    assert [len(attempts[student]) for student in ("dies-once", "dies-always", "healthy")] == [2, 2, 1]
    pids = {path.name.split(".")[2] for path in attempts["dies-once"]}
    assert len(pids) == 2, "the retry ran in another worker process"
    failed = next(result for result in results if result.student == "dies-always")
    assert "killed 2 Dask workers" in failed.message
    assert [(row["student"], row["status"]) for row in gradebook(tmp_path / "out")] == [("dies-always", "error")]
    assert not regrade._record_path(tmp_path / "out", "dies-always").exists(), "an error row is graded again next run"


def test_workers_set_up_unlike_the_client_are_refused(tmp_path, monkeypatch):
    (tmp_path / "ana.ipynb").write_text("{}")
    monkeypatch.setattr(regrade, "environment", lambda: "the client's code changed after the workers started")
    with pytest.raises(batch.BatchError, match=r"2 Dask worker\(s\) lack this kit's code and packages"):
        cli.grade_folder(tmp_path, RUBRIC, tmp_path / "out", executor=batch.DaskCluster(workers=2))


def test_a_scheduler_out_of_reach_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "class").mkdir()
    monkeypatch.setattr(batch, "CONNECT_SECONDS", 1)
    argv = ["grade", str(tmp_path / "class"), "--rubric", str(RUBRIC.path), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "no Dask scheduler answers at tcp://127.0.0.1:9" in capsys.readouterr().err
    assert cli.main([*argv, "--scheduler", "tcp://127.0.0.1:9"]) == 2, "--scheduler without --executor dask"


def test_a_preloaded_worker_starts_warm_without_dasks_profiler(monkeypatch):
    warmed = []
    monkeypatch.setattr(dask_worker.grader, "warm_up", lambda: warmed.append(True))
    worker = types.SimpleNamespace(periodic_callbacks={"profile": 1, "profile-cycle": 2, "heartbeat": 3})
    dask_worker.dask_setup(worker)
    assert warmed == [True]
    assert worker.periodic_callbacks == {"heartbeat": 3}, "the heartbeat and Dask's other callbacks stay"
