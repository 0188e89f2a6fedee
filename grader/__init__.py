"""Autograder for the course's MLflow homework.

``grade_submission(path, rubric)`` grades one student's notebook, folder or zip, in stages:
intake (copy it into a fresh working directory) → execute (run it in the sandbox) → inspect (read its MLflow
store) → probe (load its models in the sandbox and re-score them) → score (the rubric's checks) → report
(result.json, feedback.html).
``python -m grader grade`` does it for a whole folder of submissions.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import tempfile
import threading
import traceback
from functools import cache
from pathlib import Path

from grader import execute, inspect, intake, probe, report, sandbox, score
from grader.result import Result
from grader.rubric import Rubric, RubricError
from grader.rubric import load as load_rubric

__all__ = ["Result", "Rubric", "RubricError", "grade_submission", "load_rubric"]

MESSAGE_CHARS = 4000
BACKGROUND_NICENESS = 19  # warm-up work runs only on CPU the notebook leaves idle


def grade_submission(
    path: str | Path,
    rubric: Rubric | str | Path,
    out: str | Path | None = None,
    *,
    cpus: list[int] | None = None,
    keep_artifacts: bool = False,
    student: str | None = None,
) -> Result:
    """Grade one submission into ``out/STUDENT/`` (a temporary folder if ``out`` is None) and return its Result.

    ``cpus`` pins the student's code to those cores (all of the grader's by default). A failure of the grader
    itself becomes status ``error`` with the traceback as message: one submission never stops a batch.
    """
    rubric = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
    path = Path(path)
    student = student or intake.student_name(path)
    folder = Path(out if out is not None else tempfile.mkdtemp(prefix="grader-")).resolve() / student
    try:
        return _grade(path, rubric, student, folder, cpus, keep_artifacts)
    except Exception:
        message = ("the grader failed:\n" + traceback.format_exc())[-MESSAGE_CHARS:]
        unknown = {"isolated": False, "description": "unknown: the grader failed on this submission"}
        result = Result(student, "error", 0, rubric.max_score, message, sandbox=unknown)
        result.checks = score.not_executed(rubric, "the grader failed on this submission")
        return _finish(result, None, folder, folder / "work", rubric, keep_artifacts)


def _grade(path: Path, rubric: Rubric, student: str, folder: Path, cpus: list[int] | None, keep: bool) -> Result:
    _warm_up_in_background()
    probes = probe.service(rubric)  # one warm server per grading process; its imports overlap the notebook
    workdir = folder / "work"
    if folder.exists():
        shutil.rmtree(folder)  # re-grading starts from nothing
    workdir.mkdir(parents=True)
    cpus = cpus or sorted(_available_cpus())
    box = sandbox.create(dataclasses.replace(rubric.limits, cpu_threads=len(cpus)))
    sandbox_facts = {"isolated": box.isolated, "description": box.description}
    try:
        notebook_path = intake.stage(path, workdir, rubric)
        notebook = intake.read_notebook(notebook_path)
    except intake.Rejected as rejection:
        result = Result(student, rejection.status, 0, rubric.max_score, rejection.message, sandbox=sandbox_facts)
        result.checks = score.not_executed(rubric, rejection.message)
        return _finish(result, None, folder, workdir, rubric, keep)

    execution = _execute(notebook, workdir, box, rubric, cpus)
    facts = inspect.inspect_store(workdir, execution.notebook, rubric)
    facts.scores = probes.score(inspect.models_to_score(facts, workdir), cpus)
    checks, flags = score.score(facts, execution.notebook, rubric)
    result = Result(
        student,
        execution.status,
        sum(check.points for check in checks),
        rubric.max_score,
        " ".join(filter(None, [execution.message if execution.status != "graded" else "", facts.problem])),
        checks,
        flags,
        sandbox_facts,
        facts.summary(rubric.rank_by),
    )
    return _finish(result, execution.notebook, folder, workdir, rubric, keep)


def _execute(notebook, workdir: Path, box: sandbox.Sandbox, rubric: Rubric, cpus: list[int]) -> execute.Execution:
    box.prepare(workdir)
    try:
        env = _environment(box, workdir, cpus)
        return execute.run_notebook(notebook, workdir, box, rubric.limits, env, _pin_to(cpus))
    finally:
        box.cleanup(workdir)  # nothing of the student's runs on while the grader reads what it left


def _finish(result: Result, notebook, folder: Path, workdir: Path, rubric: Rubric, keep: bool) -> Result:
    if not result.sandbox.get("isolated"):
        result.flags.append("not_isolated")
    report.write_submission(result, notebook, folder, rubric)
    if not keep:
        report.discard_artifacts(workdir)
    return result


def _environment(box: sandbox.Sandbox, workdir: Path, cpus: list[int]) -> dict[str, str]:
    env = box.environment(workdir)
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir}/mlflow.db",
        # A notebook pointing MLflow at a server must fail fast, not retry for minutes.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        MLFLOW_DISABLE_TELEMETRY="true",
        LOKY_MAX_CPU_COUNT=str(len(cpus)),
    )
    return env


def _pin_to(cpus: list[int]) -> list[str]:
    """``taskset`` in front of the launched argv, so the kernel and everything it starts share ``cpus``."""
    taskset = shutil.which("taskset")
    if taskset is None or set(cpus) == _available_cpus():
        return []
    return [taskset, "-c", ",".join(map(str, cpus))]


def _available_cpus() -> set[int]:
    return os.sched_getaffinity(0)


@cache
def _warm_up_in_background() -> None:
    """Once per process: the grader's own heavy imports happen while the first notebook runs, not after it."""

    def warm_up() -> None:
        # Linux gives each thread its own niceness: this one yields the CPU to the kernel being graded.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        inspect.warm_up()
        report.warm_up()
        # What these imports built lives as long as the process: frozen, it is not walked again by every full
        # garbage collection, nor at exit (that walk made a one-notebook run end 0.8 s later).
        gc.freeze()

    threading.Thread(target=warm_up, daemon=True).start()
