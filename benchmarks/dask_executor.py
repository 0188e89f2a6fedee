"""Benchmark the Dask executor and incremental re-grading; prints figures measured in this one run (not a test).

(a) overhead: a class of 8 complete submissions (the reference solution 8 times), --executor dask --scheduler
    on a running cluster of 2 one-core workers ÷ the local pool with --jobs 2          target ≤ 1.05
(b) throughput of the Dask executor, a running cluster of 2 workers ÷ one of 1 worker   target ≥ 1.8 on 2 cores
(c) re-grading the unchanged class of 8 (nothing to grade: stage, key, verify, gradebook)   target < 5 s
and, for planning, one worker's cost per complete submission and the peak memory of the client and the workers.
Each Dask batch gets a cluster of its own, started as the README starts one (``dask scheduler``, ``dask worker
--nthreads 1 --preload grader.dask_worker``, on loopback, free ports) and left SETTLE_SECONDS to warm up before the
batch is timed, then stopped: a cluster serves many batches, so its start is not a batch's cost (it is printed
apart, with one end-to-end batch on a LocalCluster started by ``--executor dask`` alone), and no idle cluster
shares the cores with the batch being timed. Like the local pool's, each batch starts its probe servers. Each of
(a) and (b) runs in rounds, the two sides back to back in alternating order (a shared machine's speed drifts); the
median ratio is printed with every round.

    .venv/bin/python benchmarks/dask_executor.py [--rounds N] [--size N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from grading import assert_full_marks  # benchmarks/grading.py, beside this file

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "homework" / "solution" / "homework-195.ipynb"
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"


PEAKS: dict[str, float] = {"client": 0.0, "workers": 0.0}  # MB, the highest seen in any run
CLUSTER_START_SECONDS = 120
SETTLE_SECONDS = 10  # for the workers' preload (imports, a spare runner) to finish, as on a cluster started earlier
STARTS: list[float] = []  # seconds each cluster took until all its workers had joined


class Cluster:
    """A scheduler and ``workers`` one-core worker processes, started with Dask's own commands on loopback (free
    ports), as the README says; ``address`` once every worker has joined."""

    def __init__(self, scratch: Path, workers: int):
        self.file = scratch / f"scheduler-{workers}.json"
        dask = str(Path(sys.executable).with_name("dask"))
        common = ("--host", "127.0.0.1", "--no-dashboard")
        started = time.perf_counter()
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", *common, "--port", "0", "--scheduler-file", str(self.file)], **_QUIET
        )
        worker = [dask, "worker", *common, "--scheduler-file", str(self.file), "--nworkers", str(workers)]
        worker += ["--nthreads", "1", "--preload", "grader.dask_worker", "--local-directory", str(scratch)]
        while not self.file.exists():
            time.sleep(0.1)
        self.worker = subprocess.Popen(worker, cwd=REPO, **_QUIET)
        import distributed

        with distributed.Client(scheduler_file=str(self.file), timeout=CLUSTER_START_SECONDS) as client:
            client.wait_for_workers(workers, timeout=CLUSTER_START_SECONDS)
        STARTS.append(time.perf_counter() - started)
        self.address = json.loads(self.file.read_text())["address"]

    def memory_mb(self) -> float:
        """The resident memory of everything the workers' command started (nannies, workers, their runners,
        kernels and probe servers; the sum of RSS, an upper bound)."""
        with contextlib.suppress(psutil.Error):
            return sum(_rss(process) for process in psutil.Process(self.worker.pid).children(recursive=True))
        return 0.0

    def stop(self) -> None:
        for process in (self.worker, self.scheduler):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def grading_seconds(submissions: Path, out: Path, *options: str, cluster: Cluster | None = None) -> float:
    """Seconds of one ``python -m grader grade`` of ``submissions`` into a fresh ``out`` (on ``cluster`` if given)."""
    shutil.rmtree(out, ignore_errors=True)
    if cluster is not None:
        options = (*options, "--executor", "dask", "--scheduler", cluster.address)
    seconds = regrading_seconds(submissions, out, *options, cluster=cluster)
    assert_full_marks(out)  # every submission is the reference solution
    return seconds


def batch_seconds(scratch: Path, submissions: Path, out: Path, workers: int | None) -> float:
    """One batch: on the local pool with --jobs 2 (``workers`` None), or on a fresh cluster of ``workers``."""
    if workers is None:
        return grading_seconds(submissions, out, "--jobs", "2")
    cluster = Cluster(scratch, workers)
    try:
        time.sleep(SETTLE_SECONDS)
        return grading_seconds(submissions, out, cluster=cluster)
    finally:
        cluster.stop()


def regrading_seconds(submissions: Path, out: Path, *options: str, cluster: Cluster | None = None) -> float:
    """Seconds of one run; meanwhile, the peak memory of the client and of the workers (``cluster``'s, or what the
    client started: a LocalCluster's nannies, workers, kernels and probe servers; the sum of their RSS, an upper
    bound: shared pages count twice)."""
    argv = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(RUBRIC), "--out", str(out)]
    started = time.perf_counter()
    process = subprocess.Popen([*argv, *options], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = psutil.Process(process.pid)
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            PEAKS["client"] = max(PEAKS["client"], client.memory_info().rss / 1e6)
            workers = cluster.memory_mb() if cluster else sum(_rss(child) for child in client.children(recursive=True))
            PEAKS["workers"] = max(PEAKS["workers"], workers)
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
        seconds = {id(side): batch_seconds(*side) for side in pair}
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
        local = (scratch, submissions, scratch / "out-local", None)
        dask_two = (scratch, submissions, scratch / "out-dask-2", 2)
        dask_one = (scratch, submissions, scratch / "out-dask-1", 1)
        overhead, _ = rounds(args.rounds, dask_two, local, "dask 2 workers / local --jobs 2")
        print(f"(a) {args.size} submissions: Dask executor / local pool, median x{overhead:.2f}  (target <= 1.05)")
        PEAKS.update(client=0.0, workers=0.0)
        speedup, one_worker = rounds(args.rounds, dask_one, dask_two, "dask 1 worker / 2 workers")
        print(f"(b) throughput of 2 Dask workers / 1 worker, median x{speedup:.2f}  (target >= 1.8 on 2 cores)")
        print(
            f"    peak memory: client {PEAKS['client']:.0f} MB, the workers' processes (nannies, workers, their "
            f"runners, kernels and probe servers) {PEAKS['workers']:.0f} MB (sum of RSS)"
        )
        print(f"    clusters started (all workers joined) in {min(STARTS):.1f}-{max(STARTS):.1f} s")
        end_to_end = grading_seconds(submissions, scratch / "out-localcluster", "--executor", "dask", "--jobs", "2")
        print(f"    one batch on a LocalCluster of 2 started by --executor dask alone, end to end: {end_to_end:.1f} s")
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
