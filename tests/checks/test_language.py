"""`--lang es` grades a failing submission with every check's message, expectation and hint in Spanish."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"


def test_a_failing_submission_graded_in_spanish(tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    shutil.copy(REPO / "homework" / "examples" / "nine-runs.ipynb", submissions)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "grade", str(submissions), "--rubric", str(RUBRIC), "--out", str(out)]
    completed = subprocess.run([*command, "--lang", "es"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads((out / "nine-runs" / "result.json").read_text())
    messages = {check["id"]: check["message"] for check in result["checks"]}
    assert result["status"] == "graded" and result["score"] == 14
    assert messages["runs"] == "hay 9 ejecuciones; se necesitan al menos 10"
    assert messages["experiment"] == "se encontró el experimento 'homework-195'"
    assert messages["run_models"].startswith("las 9 ejecuciones tienen un modelo guardado")
    assert "coincide con el del calificador" in messages["metrics_honest"]
    page = (out / "nine-runs" / "feedback.html").read_text()
    assert "Entrena y registra al menos 10 modelos" in page  # the rubric's hint_es of the failed check
    assert "al menos 10 ejecuciones en él" in page  # its expectation
    assert "Train and log at least 10 models" not in page
