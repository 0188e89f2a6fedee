"""Command line: ``python -m grader grade SUBMISSIONS --rubric RUBRIC --out OUT [--jobs N] [--timeout S]
[--force] [--executor dask [--scheduler tcp://HOST:PORT]]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from grader import batch, class_report, grade_submission, i18n, intake, report, self_check
from grader.result import Result
from grader.rubric import Rubric, RubricError
from grader.rubric import load as load_rubric


def grade_folder(
    submissions: Path,
    rubric: Rubric,
    out: Path,
    jobs: int = 1,
    keep_artifacts: bool = False,
    console: Console | None = None,
    executor: batch.LocalPool | batch.DaskCluster | None = None,
    force: bool = False,
    language: str | None = None,
) -> list[Result]:
    """Grade every submission in ``submissions`` into ``out`` (grader/batch.py: ``jobs`` at a time on this machine
    unless another ``executor`` is given; unchanged ones reused unless ``force``); write the gradebook and the class
    report. ``language`` of the feedback: default the rubric's, else English."""
    console = console or Console(stderr=True)
    if language:  # in the rubric, so that a grading in another language is not reused (grader/regrade.py's key)
        rubric = dataclasses.replace(rubric, language=language)
    found = intake.find_submissions(submissions)
    out.mkdir(parents=True, exist_ok=True)
    columns = (
        TextColumn("grading"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    results = []
    executor = executor or batch.LocalPool(jobs)
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=len(found))
        for result, reused in batch.grade(found, rubric, out, executor, keep_artifacts, force):
            results.append(result)
            # After every submission: a grader killed mid-batch loses only the rows still in flight.
            report.write_gradebook(results, out)
            class_report.write_index(results, rubric, out, pending=len(found) - len(results))
            unchanged = " (unchanged, not re-graded)" if reused else ""
            progress.update(task, advance=1, description=f"{result.student}: {result.status}{unchanged}")
    results.sort(key=lambda result: result.student)
    report.write_gradebook(results, out)
    class_report.write_index(results, rubric, out)
    console.print(summary_table(results))
    unisolated = [result for result in results if "not_isolated" in result.flags]
    if unisolated:
        console.print(
            f"[bold red]NOT ISOLATED:[/] {len(unisolated)} of {len(results)} submissions ran without the sandbox: "
            f"{escape(unisolated[0].sandbox.get('description', ''))}. See SECURITY.md."
        )
    return results


def summary_table(results: list[Result]) -> Table:
    table = Table(title="Gradebook")
    for column in ("student", "status", "score", "flags", "first failed check"):
        table.add_column(column)
    for result in results:
        failed = next((f"{check.id}: {check.message}" for check in result.checks if not check.passed), "")
        style = "green" if result.status == "graded" else "red"
        score = f"{result.score}/{result.max_score}"
        flags = f"[bold red]{escape(' '.join(result.flags))}[/]" if result.flags else ""
        table.add_row(escape(result.student), f"[{style}]{result.status}[/]", score, flags, escape(failed[:90]))
    return table


def check_notebook(notebook: Path, rubric: Rubric, out: Path, console: Console, language: str | None = None) -> Result:
    """A student's self-check: the instructor's pipeline and rubric on one notebook, every check with a hint."""
    self_check.say_checking(notebook, rubric, console, language)
    result = grade_submission(notebook, rubric, out, student=notebook.stem, self_check=True, language=language)
    self_check.show(result, notebook, out / result.student / "feedback.html", console, language)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description="Autograder for the MLflow homework.")
    commands = parser.add_subparsers(dest="command", required=True)
    grade = commands.add_parser("grade", help="grade a folder of submissions")
    grade.add_argument("submissions", type=Path, help="folder of NAME.ipynb, NAME/ or NAME.zip entries")
    grade.add_argument("--rubric", type=Path, required=True, help="e.g. homework/homework-195.rubric.toml")
    grade.add_argument("--out", type=Path, required=True, help="where gradebook.csv and OUT/NAME/ go")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    grade.add_argument("--timeout", type=int, help="seconds for a whole notebook (default: the rubric's)")
    grade.add_argument("--keep-artifacts", action="store_true", help="keep each submission's MLflow store")
    grade.add_argument("--lang", choices=i18n.LANGUAGES, help="feedback language (default: the rubric's, else en)")
    grade.add_argument("--force", action="store_true", help="grade every submission, even those unchanged since")
    grade.add_argument(
        "--executor", choices=("local", "dask"), default="local", help="local threads (default) or Dask workers"
    )
    grade.add_argument("--scheduler", help="with --executor dask: tcp://HOST:PORT (default: a LocalCluster of --jobs)")
    check = commands.add_parser("check", help="check your own homework notebook before handing it in")
    check.add_argument("notebook", type=Path, help="e.g. homework/homework-195.ipynb")
    check.add_argument("--rubric", type=Path, help="default: the homework's rubric beside the notebook")
    check.add_argument("--out", type=Path, help="default: .self-check/ beside the notebook")
    check.add_argument("--lang", choices=i18n.LANGUAGES, help="messages language (default: the rubric's, else en)")
    release = commands.add_parser("release", help="write the student edition of the kit (no solutions)")
    release.add_argument("folder", type=Path, help="e.g. release/ (emptied first)")
    release.add_argument("--binder-repo", default=None, help="OWNER/NAME of the edition's public repository")
    bundle = commands.add_parser("gradescope-bundle", help="build the autograder zip to upload to Gradescope")
    bundle.add_argument("--rubric", type=Path, required=True, help="e.g. homework/homework-195.rubric.toml")
    bundle.add_argument("--out", type=Path, default=Path("autograder.zip"), help="default: autograder.zip")
    gradescope_run = commands.add_parser("gradescope-run", help="on Gradescope: grade ROOT/submission")
    gradescope_run.add_argument("--rubric", type=Path, required=True)
    gradescope_run.add_argument("--root", type=Path, default=Path("/autograder"), help="default: /autograder")
    gradescope_run.add_argument("--lang", choices=i18n.LANGUAGES, help="default: the rubric's, else English")
    gradescope_run.add_argument("--check-setup", action="store_true", help="load the rubric, try the sandbox")
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    if args.command == "check":
        return _check(args, console)
    if args.command == "release":
        return _release(args, console)
    if args.command.startswith("gradescope-"):
        from grader import gradescope

        return gradescope.command(args, console)
    try:
        rubric = load_rubric(args.rubric)
    except RubricError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    if not args.submissions.is_dir():
        console.print(f"[red]error:[/] {args.submissions} is not a folder of submissions")
        return 2
    if args.jobs < 1 or (args.timeout is not None and args.timeout < 1):
        console.print("[red]error:[/] --jobs and --timeout must be positive")
        return 2
    if args.timeout:
        limits = dataclasses.replace(
            rubric.limits, wall_seconds=args.timeout, cell_seconds=min(rubric.limits.cell_seconds, args.timeout)
        )
        rubric = dataclasses.replace(rubric, limits=limits)
    if args.scheduler and args.executor != "dask":
        console.print("[red]error:[/] --scheduler needs --executor dask")
        return 2
    executor = batch.DaskCluster(args.scheduler, args.jobs) if args.executor == "dask" else batch.LocalPool(args.jobs)
    try:
        grade_folder(
            args.submissions, rubric, args.out, args.jobs, args.keep_artifacts, console, executor, args.force, args.lang
        )
    except batch.BatchError as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return 2
    print(args.out / "gradebook.csv")
    return 0


def _check(args: argparse.Namespace, console: Console) -> int:
    notebook = args.notebook
    if not notebook.is_file():
        console.print(f"[red]error:[/] {notebook} is not a notebook file")
        return 2
    try:
        rubric = load_rubric(args.rubric or _rubric_beside(notebook))
    except RubricError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    check_notebook(notebook, rubric, args.out or notebook.resolve().parent / ".self-check", console, args.lang)
    return 0


def _release(args: argparse.Namespace, console: Console) -> int:
    from grader import release

    try:
        files = release.build(args.folder, args.binder_repo or release.DEFAULT_BINDER_REPO)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    console.print(f"Wrote the student edition, {len(files)} files, to {args.folder}: publish it as its own repository.")
    return 0


def _rubric_beside(notebook: Path) -> Path:
    """NAME.rubric.toml for NAME.ipynb, in the notebook's folder or above it (homework/solution/NAME.ipynb)."""
    folder = notebook.resolve().parent
    candidates = [parent / f"{notebook.stem}.rubric.toml" for parent in (folder, *folder.parents)]
    return next((candidate for candidate in candidates if candidate.is_file()), candidates[0])


if __name__ == "__main__":
    sys.exit(main())
