"""What each check kind adds to grading, measured on the reference solution's store (not a test: timings depend on
the machine). Prints, per kind, the time of its check and expectation (the median of many repetitions), the time
inspect takes to read the store for homework-195's rubric and for one that also uses every kind of lessons 06-08
(dataset inputs, artifacts listed, version tags), and both against the whole grading of the reference.

    .venv/bin/python benchmarks/check_kinds.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "homework" / "solution" / "homework-195.ipynb"
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"
# One check of every kind homework-195 does not use, on its experiment and registered model.
EXTRA_CHECKS = """
[[checks]]
id = "data"
kind = "dataset_input"
points = 0
hint = "(benchmark)"
experiment = "homework-195"
context = "training"

[[checks]]
id = "report"
kind = "artifact_present"
points = 0
hint = "(benchmark)"
experiment = "homework-195"
path = "*.html"
contains = "p_holm"

[[checks]]
id = "versions"
kind = "version_count"
points = 0
hint = "(benchmark)"
model = "housing-best"
min_versions = 1

[[checks]]
id = "semver"
kind = "version_tag"
points = 0
hint = "(benchmark)"
model = "housing-best"
stage = "Production"
tag = "semver"

[[checks]]
id = "gated"
kind = "alias_on_gated_version"
points = 0
hint = "(benchmark)"
model = "housing-best"
alias = "champion"
tag = "gate"
value = "passed"

[[checks]]
id = "described"
kind = "description_present"
points = 0
hint = "(benchmark)"
model = "housing-best"
"""


def median_seconds(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    import nbformat

    from grader import inspect, probe, score
    from grader.checks import kind
    from grader.rubric import load

    scratch = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    try:
        submissions = scratch / "submissions"
        submissions.mkdir()
        shutil.copy(REFERENCE, submissions / "reference.ipynb")
        out = scratch / "out"
        started = time.perf_counter()
        command = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(RUBRIC), "--out"]
        subprocess.run([*command, str(out), "--keep-artifacts"], check=True, capture_output=True, cwd=REPO)
        grading = time.perf_counter() - started
        workdir = out / "reference" / "work"
        notebook = nbformat.read(out / "reference" / "reference.ipynb", as_version=4)

        rubric = load(RUBRIC)
        extended_path = scratch / "extended.rubric.toml"
        text = RUBRIC.read_text().replace("max_score = 16\n", "")
        extended_path.write_text(text.replace("[limits]", EXTRA_CHECKS.strip() + "\n\n[limits]"))
        extended = load(extended_path)
        inspect.warm_up()
        reads = {
            name: median_seconds(lambda r=r: inspect.inspect_store(workdir, notebook, r), max(3, args.repeat // 10))
            for name, r in (("homework-195", rubric), ("with every kind", extended))
        }
        facts = inspect.inspect_store(workdir, notebook, extended)
        facts.scores = probe.service(extended).score(
            inspect.models_to_score(facts, workdir), sorted(os.sched_getaffinity(0))
        )
        context = score._context(facts, notebook, extended, "en")

        print(f"grading the reference (one submission, --jobs 1): {grading:.1f} s")
        for name, seconds in reads.items():
            print(f"inspect reads the store for {name} rubric: {seconds * 1000:.1f} ms")
        print(f"{'kind':<24} {'check + expectation':>20}")
        total = 0.0
        for spec in extended.checks:
            module = kind(spec.kind)

            def run(module=module, spec=spec) -> None:
                module.check(spec.params, context)
                module.expectation(spec.params, context)

            seconds = median_seconds(run, args.repeat)
            total += seconds
            print(f"{spec.kind:<24} {seconds * 1e6:>17.0f} µs")
        extra = reads["with every kind"] - reads["homework-195"]
        print(f"all {len(extended.checks)} checks: {total * 1000:.2f} ms; the new kinds' facts: {extra * 1000:.1f} ms")
        print(f"ratio (checks + new facts) ÷ grading the reference: {(total + max(extra, 0)) / grading:.1e}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
