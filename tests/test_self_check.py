"""A student's self-check grades their notebook with the instructor's pipeline and rubric and says what to do.

This file ships in the student edition too: there it checks the homework notebook as students get it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOMEWORK = REPO / "homework" / "homework-195.ipynb"

pytestmark = pytest.mark.slow


def self_check(notebook: Path, out: Path, sandbox: str = "auto") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "grader", "check", str(notebook), "--out", str(out)]
    # rich folds its table to the terminal's width; GRADER_SANDBOX=off is a laptop or Binder without bubblewrap.
    environment = {**os.environ, "COLUMNS": "200", "GRADER_SANDBOX": sandbox}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_the_unsolved_homework_gets_every_check_with_a_hint(tmp_path, sandbox):
    checked = self_check(HOMEWORK, tmp_path, sandbox)
    assert checked.returncode == 0, checked.stderr[-2000:]
    report = checked.stderr
    for check in ("experiment", "runs", "run_fields", "run_models", "registered", "final_prediction"):
        assert check in report
    assert "NotImplementedError" in report  # where the student's notebook stopped
    assert "mlflow.register_model" in report  # a hint from the rubric, for a failed check
    assert "Score: 1 / 16 (self-check)" in report
    assert "The grade that counts is the one your instructor's grader gives" in report
    page = (tmp_path / "homework-195" / "feedback.html").read_text()
    for alarm in (report, page):  # a student checking their own code needs no sandbox, and is not told off
        assert "WARNING" not in alarm and "NOT ISOLATED" not in alarm.upper()
    if sandbox == "off":
        assert "no sandbox is needed" in page
