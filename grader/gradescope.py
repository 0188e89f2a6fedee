"""Gradescope: a submission's ``results.json``, and the autograder bundle an instructor uploads.

``python -m grader gradescope-bundle --rubric R --out autograder.zip`` zips ``setup.sh`` and ``run_autograder`` at
the root (as Gradescope's specification asks), with the kit's grader, its lock and the data set's cache.
``setup.sh`` builds the kit's environment on Gradescope's image; ``run_autograder`` calls
``python -m grader gradescope-run``, which grades ``/autograder/submission`` with ``grade_submission`` and
writes ``/autograder/results/results.json``. The format:
https://gradescope-autograders.readthedocs.io/en/latest/specs/ — every string in it is declared ``text``, so
nothing a student's notebook or store says is rendered as HTML or Markdown.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from grader import grade_submission, i18n, report, sandbox
from grader.result import Result
from grader.rubric import Rubric, RubricError
from grader.rubric import load as load_rubric

ROOT = Path("/autograder")  # where Gradescope puts everything
STUDENT = "submission"  # the folder's name inside the grader's output: never a name from the student
# What the bundle carries of the kit: the grader's packages (never homework/: its solution) and what installs them.
KIT_FILES = ("pyproject.toml", "requirements.lock", "LICENSE", "README.md")
KIT_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
EXECUTABLE = 0o755


def results_json(result: Result, language: str | None = None, execution_seconds: float | None = None) -> dict:
    """The Gradescope results of one graded submission: one test per check, the score the grader computed."""
    language = report.language_of(result, language)
    say = i18n.messages("report", language)
    meaning = report.status_meaning(result.status, language)
    summary = [
        say("gradescope.score", score=result.score, max_score=result.max_score),
        say("gradescope.status", status=result.status, meaning=meaning),
    ]
    if result.message:
        summary.append(result.message)
    if result.flags:
        summary.append(say("gradescope.flags", flags=", ".join(result.flags)))
    tests = [
        {
            "name": check.id,
            "name_format": "text",
            "number": str(number),
            "score": float(check.points),
            "max_score": float(check.max_points),
            # Explicit: a check worth 0 points (a flag such as metrics_honest) still shows passed or failed.
            "status": "passed" if check.passed else "failed",
            "output": _test_output(check, say),
            "output_format": "text",
            "visibility": "visible",
        }
        for number, check in enumerate(result.checks, start=1)
    ]
    results = {
        "score": float(result.score),
        "output": "\n".join(summary),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",  # the grader's log is for the instructor
        "extra_data": {
            "status": result.status,
            "flags": list(result.flags),
            "sandbox": dict(result.sandbox),
            "language": language,
        },
        "tests": tests,
    }
    if execution_seconds is not None:
        results["execution_time"] = round(execution_seconds)
    return results


def _test_output(check, say) -> str:
    lines = [say("gradescope.found", message=check.message)]
    if check.expected:
        lines.append(say("gradescope.expected", expected=check.expected))
    if not check.passed and check.hint:
        lines.append(say("gradescope.what_to_do", hint=check.hint))
    return "\n".join(lines)


def run(root: Path, rubric: Rubric, language: str | None = None) -> Path:
    """Grade ``root/submission`` as Gradescope lays it out; write ``root/results/results.json`` and return it."""
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    if language and hasattr(rubric, "language"):  # the rubric's language is what the checks' messages speak
        rubric = dataclasses.replace(rubric, language=language)
    with tempfile.TemporaryDirectory(prefix="grading-", dir=root) as out:
        started = time.monotonic()
        result = grade_submission(root / "submission", rubric, out, student=STUDENT)
        document = results_json(result, language, time.monotonic() - started)
    path = results / "results.json"
    with report.replaced_atomically(path) as stream:
        json.dump(document, stream, indent=2, ensure_ascii=False)
    return path


def build_bundle(rubric_path: Path, zip_path: Path, kit: Path = sandbox.REPO) -> Path:
    """The zip to upload as a Gradescope autograder: setup.sh and run_autograder at its root, then the kit."""
    load_rubric(rubric_path)  # a rubric that does not load would fail every student's submission
    with tempfile.TemporaryDirectory(prefix="gradescope-bundle-") as scratch:
        staged = Path(scratch)
        for folder in sandbox.KIT_DIRS:
            shutil.copytree(kit / folder, staged / folder, ignore=KIT_IGNORED)
        for name in KIT_FILES:
            shutil.copy2(kit / name, staged / name)
        shutil.copy2(rubric_path, staged / "rubric.toml")
        cache = sandbox.host_data_home() / "cal_housing_py3.pkz"
        if cache.is_file():  # else setup.sh lets scikit-learn download it (Gradescope's build has the network)
            (staged / "data").mkdir()
            shutil.copy2(cache, staged / "data" / cache.name)
        (staged / "setup.sh").write_text(setup_script(uv_version(kit)))
        (staged / "run_autograder").write_text(RUN_AUTOGRADER)
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(staged.rglob("*")):
                if path.is_file():
                    member = path.relative_to(staged).as_posix()
                    info = zipfile.ZipInfo.from_file(path, member)
                    mode = EXECUTABLE if member in ("setup.sh", "run_autograder") else 0o644
                    info.external_attr = (stat.S_IFREG | mode) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    bundle.writestr(info, path.read_bytes())
    return zip_path


def command(args, console: Console) -> int:
    """``gradescope-bundle`` and ``gradescope-run`` (see ``python -m grader --help``)."""
    try:
        rubric = load_rubric(args.rubric)
        if args.command == "gradescope-bundle":
            path = build_bundle(args.rubric, args.out)
            console.print(f"Wrote {escape(str(path))}: upload it as the assignment's autograder on Gradescope.")
        elif args.check_setup:
            box = sandbox.create(rubric.limits)
            console.print(f"Rubric {escape(args.rubric.name)} loads. Sandbox: {escape(box.description)}")
        else:
            console.print(f"Wrote {escape(str(run(args.root, rubric, args.lang)))}")
    except (RubricError, ValueError, OSError) as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return 2
    return 0


def uv_version(kit: Path) -> str:
    """The uv the kit pins (common.mk), so Gradescope's environment resolves exactly like the kit's own."""
    match = re.search(r"^UV_VERSION := (\S+)$", (kit / "common.mk").read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{kit / 'common.mk'} names no UV_VERSION")
    return match.group(1)


def setup_script(uv: str) -> str:
    return SETUP.replace("__UV_VERSION__", uv)


# Gradescope runs setup.sh as root in /autograder/source on its Ubuntu image when the autograder is built.
SETUP = """#!/usr/bin/env bash
# Build the MLflow kit's grader on Gradescope's image: bubblewrap (the sandbox), Python 3.11 and the kit's exact
# pins (requirements.lock) in /autograder/source/.venv, and California Housing in scikit-learn's cache.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends bubblewrap python3 python3-venv python3-pip ca-certificates >/dev/null
python3 -m venv /autograder/uv
/autograder/uv/bin/pip install --quiet --disable-pip-version-check uv==__UV_VERSION__
# The image's Python may be older than the kit's 3.11: uv fetches a managed 3.11 when it is missing.
/autograder/uv/bin/uv venv --quiet --python 3.11 .venv
VIRTUAL_ENV=/autograder/source/.venv /autograder/uv/bin/uv pip install --quiet --compile-bytecode -r requirements.lock
VIRTUAL_ENV=/autograder/source/.venv /autograder/uv/bin/uv pip install --quiet --no-deps .
if [ -f data/cal_housing_py3.pkz ]; then
  mkdir -p "$HOME/scikit_learn_data"
  cp data/cal_housing_py3.pkz "$HOME/scikit_learn_data/"
fi
.venv/bin/python -m coursekit.housing  # verifies the cache (or downloads it) against datasets/
.venv/bin/python -m grader gradescope-run --check-setup --rubric rubric.toml  # prints whether the sandbox works here
"""

# Gradescope copies this to /autograder/run_autograder and runs it, in /autograder, for every submission.
RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grade /autograder/submission with the kit's grader; it writes /autograder/results/results.json.
# AUTOGRADER_ROOT stands for /autograder in the kit's tests; Gradescope never sets it.
set -euo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
cd "$root/source"
exec .venv/bin/python -m grader gradescope-run --rubric rubric.toml --root "$root" "$@"
"""
