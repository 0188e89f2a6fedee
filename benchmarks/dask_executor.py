"""Benchmark the Dask executor and incremental re-grading; prints figures measured in this one run (not a test).

(a) overhead: a class of 8 complete submissions (the reference solution 8 times), --executor dask on a
    LocalCluster of 2 workers ÷ the local pool with --jobs 2                   target ≤ 1.05
    (end to end, as an instructor runs it: the dask figure includes starting the LocalCluster)
(b) throughput of the Dask executor, 2 workers ÷ 1 worker, on the same class    target ≥ 1.8 on 2 cores
(c) re-grading the unchanged class of 8 (nothing to grade: stage, key, verify, gradebook)   target < 5 s
and, for planning, one worker's cost per complete submission and the peak memory of the client and the workers.
Each of (a) and (b) runs in rounds, the two sides back to back in alternating order (a shared machine's speed
drifts); the median ratio is printed with every round.

    .venv/bin/python benchmarks/dask_executor.py [--rounds N] [--size N]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "homework" / "solution" / "homework-195.ipynb"
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"


PEAKS: dict[str, float] = {"client": 0.0, "workers": 0.0}  # MB, the highest seen in any run


def grading_seconds(submissions: Path, out: Path, *options: str) -> float:
    """Seconds of one ``python -m grader grade`` of ``submissions`` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    return regrading_seconds(submissions, out, *options)


def regrading_seconds(submissions: Path, out: Path, *options: str) -> float:
    """Seconds of one run; meanwhile, the peak memory of the client and of everything it started (the LocalCluster's
    nannies, workers, kernels and probe servers; the sum of their RSS, an upper bound: shared pages count twice)."""
    argv = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(RUBRIC), "--out", str(out)]
    started = time.perf_counter()
    process = subprocess.Popen([*argv, *options], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = psutil.Process(process.pid)
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            PEAKS["client"] = max(PEAKS["client"], client.memory_info().rss / 1e6)
            PEAKS["workers"] = max(PEAKS["workers"], sum(_rss(child) for child in client.children(recursive=True)))
        time.sleep(0.5)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, argv)
    return time.perf_counter() - started


def _rss(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / 1e6
    except psutil.Error:  # ended meanwhile
        return 0.0


def rounds(count: int, first: tuple, second: tuple, label: str) -> tuple[float, list[float]]:
    """Median of ``first`` seconds ÷ ``second`` seconds over ``count`` rounds, the order alternating; and every
    round's ``first`` seconds."""
    ratios, firsts = [], []
    for number in range(1, count + 1):
        pair = (first, second) if number % 2 else (second, first)
        seconds = {id(side): grading_seconds(*side) for side in pair}
        one, two = seconds[id(first)], seconds[id(second)]
        ratios.append(one / two)
        firsts.append(one)
        print(f"    round {number} {label}: {one:.1f} s / {two:.1f} s = {one / two:.2f}", flush=True)
    return statistics.median(ratios), firsts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a) and (b); the median is printed")
    parser.add_argument("--size", type=int, default=8, help="submissions in the class (default 8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grader-bench-dask-") as scratch_name:
        scratch = Path(scratch_name)
        submissions = scratch / "class"
        submissions.mkdir()
        for index in range(1, args.size + 1):
            shutil.copy(REFERENCE, submissions / f"student{index}.ipynb")
        local = (submissions, scratch / "out-local", "--jobs", "2")
        dask_two = (submissions, scratch / "out-dask-2", "--executor", "dask", "--jobs", "2")
        dask_one = (submissions, scratch / "out-dask-1", "--executor", "dask", "--jobs", "1")

        overhead, _ = rounds(args.rounds, dask_two, local, "dask 2 workers / local --jobs 2")
        print(f"(a) {args.size} submissions: Dask executor / local pool, median x{overhead:.2f}  (target <= 1.05)")
        PEAKS.update(client=0.0, workers=0.0)
        speedup, one_worker = rounds(args.rounds, dask_one, dask_two, "dask 1 worker / 2 workers")
        print(f"(b) throughput of 2 Dask workers / 1 worker, median x{speedup:.2f}  (target >= 1.8 on 2 cores)")
        print(
            f"    peak memory with 2 workers: client {PEAKS['client']:.0f} MB, everything it started (2 nannies, "
            f"2 workers, their kernels and probe servers) {PEAKS['workers']:.0f} MB (sum of RSS)"
        )
        unchanged = [regrading_seconds(submissions, scratch / "out-local") for _ in range(3)]
        print(
            f"(c) re-grading the unchanged class of {args.size}: {min(unchanged):.2f} s, best of 3 "
            f"(all: {', '.join(f'{value:.2f}' for value in unchanged)})  (target < 5 s)"
        )
        kept = [
            sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            for folder in (scratch / "out-local").iterdir()
            if folder.is_dir() and not folder.name.startswith(".")
        ]
        print(f"    OUT per complete submission: {statistics.mean(kept) / 1e3:.0f} kB (max {max(kept) / 1e3:.0f} kB)")
        per_submission = statistics.median(one_worker) / args.size
        print(
            f"    one Dask worker's cost per complete submission (1-worker batch / {args.size}): {per_submission:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
