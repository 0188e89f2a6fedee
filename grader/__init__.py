"""Autograder for the course's MLflow homework.

``grade_submission(path, rubric)`` grades one student's notebook, folder or zip, in stages:
intake (copy it into a fresh working directory) → execute (run it in the sandbox) → inspect (read its MLflow
store) → probe (load its models in the sandbox and re-score them) → score (the rubric's checks) → report
(result.json, feedback.html).
``python -m grader grade`` does it for a whole folder of submissions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import tempfile
import threading
import traceback
from functools import cache
from pathlib import Path

import nbformat

from grader import execute, inspect, intake, probe, report, sandbox, score
from grader.result import Result
from grader.rubric import Rubric, RubricError
from grader.rubric import load as load_rubric
from grader.staging import Staged

__all__ = ["Result", "Rubric", "RubricError", "grade_submission", "load_rubric", "warm_up"]

MESSAGE_CHARS = 4000
SELF_CHECK_SANDBOX = "not used: you are checking your own code on your own machine, so no sandbox is needed"
BACKGROUND_NICENESS = 19  # warm-up work runs only on CPU the notebook leaves idle


def grade_submission(
    path: str | Path | Staged,
    rubric: Rubric | str | Path,
    out: str | Path | None = None,
    *,
    cpus: list[int] | None = None,
    keep_artifacts: bool = False,
    student: str | None = None,
    self_check: bool = False,
    language: str | None = None,
) -> Result:
    """Grade one submission into ``out/STUDENT/`` (a temporary folder if ``out`` is None) and return its Result.

    ``cpus`` pins the student's code to those cores (all of the grader's by default). ``self_check``: a student
    grading their own notebook, on their own machine, needs no sandbox; without one, it is said calmly, not
    flagged. ``language``: of the messages and hints ("en", "es"); default the rubric's, else English. A failure of
    the grader
    itself becomes status ``error`` with the traceback as message, and a report that cannot be written loses the
    report, not the row: one submission never stops a batch. ``path`` may be a submission the batch has already
    staged (grader/staging.py): its bytes are laid out instead of intake copying the original.
    """
    rubric = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
    language = score.language_of(rubric, language)
    if isinstance(path, Staged):
        student = student or path.student
    else:
        path = Path(path)
        student = student or intake.student_name(path)
    folder = Path(out if out is not None else tempfile.mkdtemp(prefix="grader-")).resolve() / student
    workdir = folder / "work"
    if student in report.RESERVED_NAMES:
        message = f"a submission may not be named '{student}', like one of the grader's own files: rename it"
        sandbox_facts = {"isolated": None, "description": "not run"}
        return _rejected(student, "invalid_name", message, rubric, sandbox_facts, language)
    sandbox_facts = {"isolated": None, "description": "unknown: the grader failed before choosing a sandbox"}
    notebook = None
    try:
        result, notebook = _grade(path, rubric, student, folder, workdir, cpus, sandbox_facts, self_check, language)
    except Exception:
        message = ("the grader failed:\n" + traceback.format_exc())[-MESSAGE_CHARS:]
        result = _rejected(student, "error", message, rubric, sandbox_facts, language)
    return _finish(result, notebook, folder, workdir, rubric, keep_artifacts)


def _grade(
    path: Path | Staged,
    rubric: Rubric,
    student: str,
    folder: Path,
    workdir: Path,
    cpus: list[int] | None,
    sandbox_facts: dict,
    self_check: bool,
    language: str,
) -> tuple[Result, nbformat.NotebookNode | None]:
    """Grade; ``sandbox_facts`` is filled in as soon as the sandbox is chosen, for the row of a later failure."""
    probes = warm_up(rubric)
    if folder.exists():
        sandbox.remove_tree(folder)  # re-grading starts from nothing
    workdir.mkdir(parents=True)
    cpus = cpus or sorted(_available_cpus())
    box = sandbox.create(dataclasses.replace(rubric.limits, cpu_threads=len(cpus)))
    sandbox_facts.update(isolated=box.isolated, description=box.description)
    if self_check and not box.isolated:
        sandbox_facts.update(isolated=None, description=SELF_CHECK_SANDBOX)
    try:
        notebook_path = path.unpack(workdir) if isinstance(path, Staged) else intake.stage(path, workdir, rubric)
        notebook = intake.read_notebook(notebook_path)
    except intake.Rejected as rejection:
        return _rejected(student, rejection.status, rejection.message, rubric, sandbox_facts, language), None

    execution = _execute(notebook, workdir, box, rubric, cpus)
    facts = inspect.inspect_store(workdir, execution.notebook, rubric)
    facts.scores = probes.score(inspect.models_to_score(facts, workdir), cpus)
    checks, flags = score.score(facts, execution.notebook, rubric, language)
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
        language,
        execution.kernel_log if execution.status != "graded" else "",
    )
    return result, execution.notebook


def _rejected(student: str, status: str, message: str, rubric: Rubric, sandbox_facts: dict, language: str) -> Result:
    result = Result(student, status, 0, rubric.max_score, message, sandbox=sandbox_facts, language=language)
    result.checks = score.not_executed(rubric, message.splitlines()[0] if message else status, language)
    return result


def _execute(notebook, workdir: Path, box: sandbox.Sandbox, rubric: Rubric, cpus: list[int]) -> execute.Execution:
    box.prepare(workdir)
    try:
        env = _environment(box, workdir, cpus)
        return execute.run_notebook(notebook, workdir, box, rubric.limits, env, _pin_to(cpus))
    finally:
        box.cleanup(workdir)  # nothing of the student's runs on while the grader reads what it left


def _finish(result: Result, notebook, folder: Path, workdir: Path, rubric: Rubric, keep: bool) -> Result:
    if result.sandbox.get("isolated") is False:  # not when it is unknown: the grader failed before choosing
        result.flags.append("not_isolated")
    try:
        report.write_submission(result, notebook, folder, rubric)
    except Exception as error:  # a full disk, no descriptors left: the row still counts
        result.message = f"{result.message} The feedback could not be written: {type(error).__name__}: {error}"
        result.message = result.message.strip()[-MESSAGE_CHARS:]
    if not keep:
        with contextlib.suppress(OSError):  # a working folder that cannot be removed costs disk, not the row
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


def warm_up(rubric: Rubric | None = None) -> probe.ProbeService | None:
    """Start, without waiting for them, what a grading process needs warm: the grader's heavy imports, a spare
    runner and (given a rubric) the probe server for its data split. Once per process; later calls return at once.
    A grading calls it first; a Dask worker calls it as it starts (grader/dask_worker.py)."""
    _warm_up_in_background()
    # Here, not in the niced warm-up thread: the runner, and the kernel it starts, would inherit its niceness.
    execute.warm_up()
    # One warm server per grading process; its imports overlap the notebook.
    return probe.service(rubric) if rubric is not None else None


@cache
def _warm_up_in_background() -> None:
    """Once per process: the grader's own heavy imports happen while the first notebook runs, not after it."""

    def import_ahead() -> None:
        # Linux gives each thread its own niceness: this one yields the CPU to the kernel being graded.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        inspect.warm_up()
        report.warm_up()
        # What these imports built lives as long as the process: frozen, it is not walked again by every full
        # garbage collection, nor at exit (that walk made a one-notebook run end 0.8 s later).
        gc.freeze()

    threading.Thread(target=import_ahead, daemon=True).start()
