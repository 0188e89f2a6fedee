"""Time every lesson once and measure what it writes, against the course's budgets.

Each ``lessons/NN_*.ipynb`` runs once with its default parameters, the way the tests run it
(``tests.notebooks.execute``: fresh kernel, clean temporary folder, MLflow's default store there).
The table shows the wall time (kernel start-up included) and the size of ``mlruns/`` plus
``mlflow.db``, with pass/fail against the budgets: at most 60 s and 100 MB per lesson. It also
shows the CPU time of the processes the run started (the kernel and its children): on a busy
machine the wall time grows with the load and the CPU time hardly does, so it is a rough idea of
the wall time on an idle machine (rough: less for code that uses several cores, more for waits).

    .venv/bin/python benchmarks/lessons.py                 # every lesson
    .venv/bin/python benchmarks/lessons.py --lessons 04 05 # some of them

Exit status: 0 when every lesson ran within budget, 1 otherwise. Timings depend on the machine
and on its load; the header prints the load average so that readers can judge.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: make `tests.notebooks` importable

from tests.notebooks import execute  # noqa: E402

try:
    import resource
except ImportError:  # Windows: no CPU column
    resource = None

TIME_BUDGET_S = 60.0
SIZE_BUDGET_MB = 100.0


@dataclass
class Result:
    lesson: str
    seconds: float
    cpu_seconds: float
    megabytes: float | None
    error: str | None = None

    @property
    def within_budget(self) -> bool:
        return self.error is None and self.seconds <= TIME_BUDGET_S and (self.megabytes or 0) <= SIZE_BUDGET_MB


def artifact_megabytes(workdir: Path) -> float:
    """Size of what MLflow wrote with its defaults: the ``mlruns/`` folder and the ``mlflow.db`` file."""
    paths = [workdir / "mlflow.db"]
    if (workdir / "mlruns").is_dir():
        paths += [path for path in (workdir / "mlruns").rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in paths if path.is_file()) / 1e6


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished children (the kernels papermill started)."""
    if resource is None:
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def describe(failure: Exception) -> str:
    """One line: papermill's errors name the failing cell and the notebook's own exception."""
    if hasattr(failure, "ename"):  # papermill.PapermillExecutionError
        return f"cell {failure.cell_index}: {failure.ename}: {failure.evalue}"[:200]
    return f"{type(failure).__name__}: {(str(failure).strip().splitlines() or [''])[0]}"[:200]


def run_lesson(notebook: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"bench-{notebook.stem}-") as folder:
        workdir = Path(folder)
        start, cpu_start = time.perf_counter(), children_cpu_seconds()
        error = None
        try:
            execute(notebook, workdir)
        except Exception as failure:  # a failing lesson is reported in the table, the others still run
            error = describe(failure)
        seconds, cpu_seconds = time.perf_counter() - start, children_cpu_seconds() - cpu_start
        return Result(notebook.stem, seconds, cpu_seconds, None if error else artifact_megabytes(workdir), error)


def select(lessons: list[Path], prefixes: list[str] | None) -> list[Path]:
    if not prefixes:
        return lessons
    return [lesson for lesson in lessons if lesson.name.split("_", 1)[0] in prefixes]


def table(results: list[Result]) -> str:
    header = f"{'lesson':<28} {'time (s)':>9} {'≤60 s':>6} {'CPU (s)':>8} {'size (MB)':>10} {'≤100 MB':>8}  result"
    lines = [header, "-" * len(header)]
    for result in results:
        size = "-" if result.megabytes is None else f"{result.megabytes:.1f}"
        time_ok = "pass" if result.seconds <= TIME_BUDGET_S else "FAIL"
        size_ok = "-" if result.megabytes is None else ("pass" if result.megabytes <= SIZE_BUDGET_MB else "FAIL")
        verdict = result.error or ("pass" if result.within_budget else "over budget")
        lines.append(
            f"{result.lesson:<28} {result.seconds:>9.1f} {time_ok:>6} {result.cpu_seconds:>8.1f} "
            f"{size:>10} {size_ok:>8}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="+", metavar="NN", help="only these lesson numbers, e.g. 04 05")
    args = parser.parse_args(argv)

    lessons = select(sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb")), args.lessons)
    if not lessons:
        print("no lessons found" + (f" for {' '.join(args.lessons)}" if args.lessons else ""), file=sys.stderr)
        return 1
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    print(f"{len(lessons)} lesson(s) on {os.cpu_count()} CPU(s), load average {load} (1, 5, 15 min)", flush=True)

    results = []
    for lesson in lessons:
        print(f"running {lesson.name} ...", flush=True)
        results.append(run_lesson(lesson))
    print()
    print(table(results))
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        print("note: the machine is busier than its CPU count; wall times are inflated (compare the CPU column)")
    return 0 if all(result.within_budget for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
