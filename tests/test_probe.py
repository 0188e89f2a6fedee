"""The probe server: one warm process per grading run, a fresh forked child per submission's models.

Models here are MLflow "models from code": the file's top level runs when the model loads, exactly where a
hostile pickle would run its code. The tests check that a child's leftovers never reach the next submission,
that a child which kills or stalls the server only fails itself, and that models are copied out of a
submission without following its links.
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
import uuid
import warnings
from pathlib import Path

import mlflow.pyfunc
import pytest

from grader import sandbox
from grader.probe import ProbeService, copy_model
from grader.rubric import load as load_rubric
from tests.isolation import require_bwrap

REPO = Path(__file__).resolve().parents[1]
RUBRIC = load_rubric(REPO / "homework" / "homework-195.rubric.toml")
TEST_ROWS = 4128  # 20 % of California Housing


def code_model(workdir: Path, name: str, top_level: str = "", prediction: str = "0.5") -> Path:
    """A pyfunc model whose file runs ``top_level`` when it loads and predicts ``prediction`` for every row."""
    code = workdir / f"{name}.py"
    code.write_text(
        textwrap.dedent(
            """
            import os, subprocess, time
            import mlflow
            from mlflow.pyfunc import PythonModel

            if os.environ.get("{marker}"):  # in the probe only: saving the model runs this file too
            {top_level}

            class Model(PythonModel):
                def predict(self, context, model_input, params=None):
                    return [float({prediction})] * len(model_input)

            mlflow.models.set_model(Model())
            """
        ).format(
            marker=sandbox.MARKER_VAR, top_level=textwrap.indent(top_level or "pass", " " * 4), prediction=prediction
        )
    )
    folder = workdir / "mlruns" / name
    # MLflow suggests type hints to every PythonModel without them, from inside its own warning filter (so a
    # pytest filter cannot silence it); these test models are minimal on purpose.
    with warnings.catch_warnings(record=True):
        mlflow.pyfunc.save_model(folder, python_model=str(code), pip_requirements=["mlflow"])
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("submission")


@pytest.fixture(scope="module")
def probes():
    service = ProbeService(dataclasses.replace(RUBRIC, probe_seconds=20))
    yield service
    service.close()


def test_one_warm_server_scores_submission_after_submission(probes, workdir):
    first = code_model(workdir, "first", prediction="2.0")
    second = code_model(workdir, "second", prediction="1.0")
    scores = probes.score({"production": (workdir, first), "best": (workdir, second)})
    server = probes.process.pid
    again = probes.score({"production": (workdir, first)})

    assert scores["production"].ok and scores["best"].ok, (scores, probes._log_tail())
    assert scores["production"].predictions == [2.0] * TEST_ROWS
    assert scores["production"].head == [2.0] * RUBRIC.split.prediction_rows
    truth = probes.targets  # the grader scores the predictions itself, against the true values
    assert scores["production"].rmse == pytest.approx(math.sqrt(sum((2.0 - y) ** 2 for y in truth) / len(truth)))
    assert again["production"].ok and probes.process.pid == server, "the server must be reused, not restarted"


def test_what_a_child_leaves_behind_never_reaches_the_next_students_models(probes, workdir):
    require_bwrap("killing what a child leaves in its own session")
    token = uuid.uuid4().hex
    planter = code_model(
        workdir,
        "planter",
        top_level=f"""
open("/tmp/planted-{token}", "w").write("left for the next student")
open(os.environ["{sandbox.MARKER_VAR}"] + "/planted-{token}", "w").write("in the sandbox's working directory")
os.makedirs("/tmp/locked/deeper")
os.chmod("/tmp/locked", 0)  # unreadable, to make the wipe fail
subprocess.Popen(["sleep", "300"], start_new_session=True)  # outlives the child, in a session of its own
""",
    )
    # Predicts 1 for each planted file, plus 10 for every process besides itself and the server's chain.
    spy = code_model(
        workdir,
        "spy",
        top_level="""
def leftovers():
    ancestors, pid = set(), os.getpid()
    while pid > 0:
        ancestors.add(pid)
        status = open(f"/proc/{pid}/status").read()
        pid = int(status.split("PPid:")[1].split()[0])
    return [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in ancestors]
""",
        prediction=f'os.path.exists("/tmp/planted-{token}") + os.path.exists("/tmp/locked")'
        f' + os.path.exists(os.environ["{sandbox.MARKER_VAR}"] + "/planted-{token}") + 10 * len(leftovers())',
    )
    assert probes.score({"production": (workdir, planter)})["production"].ok
    seen = probes.score({"production": (workdir, spy)})["production"]

    assert seen.ok, seen.error
    assert seen.head[0] == 0.0, "the planted file or the background process survived into the next child"


def test_a_child_that_kills_the_server_fails_alone(probes, workdir):
    killer = code_model(workdir, "killer", top_level="os.kill(os.getppid(), 9)")
    honest = code_model(workdir, "honest")
    server = probes.process.pid

    failed = probes.score({"production": (workdir, killer)})["production"]
    after = probes.score({"production": (workdir, honest)})["production"]

    assert not failed.ok and "probe server failed" in failed.error
    assert after.ok, after.error
    assert probes.process.pid != server, "a new server took over"


def test_a_model_that_never_finishes_loading_times_out_and_the_next_is_served(workdir):
    service = ProbeService(dataclasses.replace(RUBRIC, probe_seconds=3))
    try:
        stuck = service.score({"production": (workdir, code_model(workdir, "stuck", top_level="time.sleep(600)"))})
        after = service.score({"production": (workdir, code_model(workdir, "after-stuck"))})
    finally:
        service.close()
    assert not stuck["production"].ok and "took too long" in stuck["production"].error
    assert after["production"].ok, after["production"].error


def test_a_model_folder_outside_the_memory_budget_is_refused_not_copied(probes, workdir):
    big = code_model(workdir, "big")
    (big / "weights.bin").write_bytes(b"\0" * 2**20)
    tiny = dataclasses.replace(RUBRIC, limits=dataclasses.replace(RUBRIC.limits, memory_mb=1))
    service = ProbeService(tiny)
    try:
        refused = service.score({"production": (workdir, big)})["production"]
    finally:
        service.close()
    assert not refused.ok and "larger than the memory it may use" in refused.error


def test_copying_a_model_never_follows_links_nor_opens_fifos(tmp_path):
    workdir = tmp_path / "work"
    model = workdir / "mlruns" / "model"
    (model / "nested").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "nested" / "weights.bin").write_bytes(b"w" * 100)
    secret = tmp_path / "secret.txt"
    secret.write_text("the grader's secret")
    (model / "leak.txt").symlink_to(secret)
    (model / "outside").symlink_to(tmp_path)
    os.mkfifo(model / "blocks-forever")

    copied = copy_model(workdir, model, tmp_path / "copy", budget=10_000)

    names = sorted(str(path.relative_to(tmp_path / "copy")) for path in (tmp_path / "copy").rglob("*"))
    assert names == ["MLmodel", "nested", "nested/weights.bin"]
    assert copied == len("flavors: {}\n") + 100


def test_a_model_reached_through_a_link_is_refused(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "mlruns").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workdir / "mlruns" / "model").symlink_to(elsewhere)
    with pytest.raises(ValueError):  # it resolves outside the working directory
        copy_model(workdir, workdir / "mlruns" / "model", tmp_path / "copy", budget=10_000)
