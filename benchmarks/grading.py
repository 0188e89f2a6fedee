"""Benchmark the grader; prints figures measured in this one run (not a test: timings depend on the machine).

(a) grading the reference solution ÷ executing it with plain nbclient      target ≤ 1.10
(b) throughput of --jobs 2 ÷ --jobs 1 on 8 complete submissions            target ≥ 1.8 on 2 cores
    (a class that did the homework: the reference solution 8 times), printed next to this machine's own
    ceiling, 8 plain nbclient runs 2 at a time ÷ 1 at a time. A shared VM's speed drifts by tens of per cent
    within minutes, so (b) runs in rounds, --jobs 1 and --jobs 2 back to back, in alternating order so that a
    drift favours neither, and prints every round and the median ratio. --mixed adds the 8 sample submissions
    of homework/examples/, from complete to an early crash, where short broken notebooks weigh more
(c) disk kept per graded submission                                         limit: the rubric's kept_bytes
(d) a student's self-check of the reference ÷ executing it with plain nbclient  target ≤ 1.2

    .venv/bin/python benchmarks/grading.py [--repeat N] [--rounds N] [--skip-throughput] [--mixed]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "homework" / "examples"
REFERENCE = REPO / "homework" / "solution" / "homework-195.ipynb"
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"
CLASS_SIZE = 8
# Eight samples that all execute, from the whole run (reference) to an early crash.
MIXED_SAMPLES = (
    "reference.ipynb",
    "wrong-version.ipynb",
    "nine-runs.ipynb",
    "missing-metric",
    "no-models.ipynb",
    "crash-halfway.zip",
    "remote-server.ipynb",
    "kernel-dies.ipynb",
)
PLAIN_NBCLIENT = """
import sys, nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
"""


def timed(argv: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def plain_nbclient_seconds(scratch: Path, name: str) -> float:
    workdir = scratch / f"plain-{name}"
    workdir.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    return timed([sys.executable, "-c", PLAIN_NBCLIENT, str(REFERENCE), str(workdir)], cwd=workdir, env=env)


def plain_batch_seconds(scratch: Path, at_once: int) -> float:
    """The reference run CLASS_SIZE times with plain nbclient, ``at_once`` at a time: no grader at all."""
    started = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(lambda index: plain_nbclient_seconds(scratch, f"{at_once}-{index}"), range(CLASS_SIZE)))
    return time.perf_counter() - started


def throughput(
    scratch: Path, name: str, samples: dict[str, Path], jobs_1_first: bool = True, complete: bool = True
) -> tuple[float, float]:
    """Seconds to grade ``samples`` (submission name: source) with --jobs 1 and with --jobs 2."""
    batch = scratch / name
    if not batch.exists():
        batch.mkdir()
        for submission, source in samples.items():
            copy = shutil.copytree if source.is_dir() else shutil.copy
            copy(source, batch / submission)
    order = (1, 2) if jobs_1_first else (2, 1)
    seconds = {jobs: grader_seconds(batch, scratch / f"out-{name}-{jobs}", jobs, complete) for jobs in order}
    return seconds[1], seconds[2]


def grader_seconds(submissions: Path, out: Path, jobs: int, complete: bool = True) -> float:
    """Seconds of one grading of ``submissions``; ``complete``: each is the reference, so must get full marks."""
    argv = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(RUBRIC), "--out", str(out)]
    argv.append("--force")  # every run grades: an unchanged submission would otherwise be reused (grader/regrade.py)
    seconds = timed([*argv, "--jobs", str(jobs)], cwd=REPO)
    if complete:
        assert_full_marks(out)
    return seconds


def assert_full_marks(out: Path) -> None:
    """A timing is a timing of the work only if the grading came out right: every row graded, in full."""
    with (out / "gradebook.csv").open(newline="") as stream:
        for row in csv.DictReader(stream):
            if (row["status"], row["score"]) != ("graded", row["max_score"]):
                kept = Path(tempfile.mkdtemp(prefix="grader-bench-void-")) / row["student"]
                shutil.copytree(out / row["student"], kept)  # the evidence outlives the benchmark's scratch folder
                message = json.loads((kept / "result.json").read_text())["message"][:300]
                raise SystemExit(
                    f"{row['student']}: {row['status']}, {row['score']} points ({message}); the timing is void; "
                    f"its result and feedback are kept in {kept}"
                )


def self_check_seconds(scratch: Path) -> float:
    argv = [sys.executable, "-m", "grader", "check", str(REFERENCE), "--out", str(scratch / "self-check")]
    return timed(argv, cwd=REPO)


def kept_bytes(out: Path) -> dict[str, int]:
    return {
        folder.name: sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        for folder in sorted(out.iterdir())
        if folder.is_dir()
    }


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-throughput", action="store_true", help="measure (a) and (c) only")
    parser.add_argument("--repeat", type=int, default=4, help="runs of (a), alternating grader and nbclient")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of (b); the median ratio is printed")
    parser.add_argument("--mixed", action="store_true", help="also (b) on the 8 sample submissions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grader-bench-") as scratch_name:
        scratch = Path(scratch_name)
        single = scratch / "single"
        single.mkdir()
        shutil.copy(REFERENCE, single / "reference.ipynb")
        # Alternating the two, and keeping each one's fastest, takes out some of a busy machine's noise.
        plain, graded, checked = [], [], []
        for attempt in range(args.repeat):
            plain.append(plain_nbclient_seconds(scratch, f"single-{attempt}"))
            graded.append(grader_seconds(single, scratch / "out-single", jobs=1))
            checked.append(self_check_seconds(scratch))
        ratio = min(graded) / min(plain)
        print(f"(a) reference: grader {min(graded):.1f} s / plain nbclient {min(plain):.1f} s = {ratio:.2f}", end="")
        print(f"  (target <= 1.10; best of {args.repeat}; all: grader {_seconds(graded)}, plain {_seconds(plain)})")
        print(
            f"(d) self-check of the reference {min(checked):.1f} s / plain nbclient {min(plain):.1f} s = "
            f"{min(checked) / min(plain):.2f}  (target <= 1.2; all: {_seconds(checked)})"
        )

        out = scratch / "out-single"
        if not args.skip_throughput:
            students = {f"student{index}.ipynb": REFERENCE for index in range(1, CLASS_SIZE + 1)}
            ratios = []
            for round_number in range(1, args.rounds + 1):
                one, two = throughput(scratch, "class", students, jobs_1_first=round_number % 2 == 1)
                ratios.append(one / two)
                print(
                    f"    round {round_number}: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s, x{one / two:.2f}",
                    flush=True,
                )
            print(
                f"(b) {CLASS_SIZE} complete submissions: throughput of --jobs 2 / --jobs 1, median of {args.rounds} "
                f"rounds x{statistics.median(ratios):.2f}  (target >= 1.8 on 2 cores)"
            )
            alone, paired = plain_batch_seconds(scratch, 1), plain_batch_seconds(scratch, 2)
            print(
                f"    this machine's ceiling, the same {CLASS_SIZE} notebooks in plain nbclient: 1 at a time "
                f"{alone:.1f} s, 2 at a time {paired:.1f} s, x{alone / paired:.2f}"
            )
            if args.mixed:
                samples = {name: EXAMPLES / name for name in MIXED_SAMPLES}
                one, two = throughput(scratch, "mixed", samples, complete=False)
                print(
                    f"    the {len(MIXED_SAMPLES)} sample submissions (complete to early crash): --jobs 1 {one:.1f} s, "
                    f"--jobs 2 {two:.1f} s, throughput x{one / two:.2f}"
                )
            out = scratch / "out-class-2"
        sizes = kept_bytes(out)
        print(
            f"(c) disk kept per graded submission: max {max(sizes.values()) / 1e3:.0f} kB, "
            f"mean {sum(sizes.values()) / len(sizes) / 1e3:.0f} kB over {len(sizes)}  (limit 5 MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
