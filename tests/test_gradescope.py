"""Gradescope: results.json in the format of its autograder specification, the bundle an instructor uploads, and
run_autograder itself on a fake /autograder root."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile

import jsonschema
import pytest

from grader import __main__ as cli
from grader import gradescope
from tests.reports import HOSTILE, REPO, RUBRIC, result, the_class, tiny_notebook

RUBRIC_PATH = REPO / "homework" / "homework-195.rubric.toml"
# https://gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format", "Test case status", "Output
# String Formatting", "Controlling Test Case Visibility"): every field it names, with its type; no other field.
VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
TEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number"},
        "max_score": {"type": "number"},
        "status": {"enum": ["passed", "failed"]},
        "name": {"type": "string"},
        "name_format": FORMAT,
        "number": {"type": "string"},
        "output": {"type": "string"},
        "output_format": FORMAT,
        "tags": {"type": "array", "items": {"type": "string"}},
        "visibility": VISIBILITY,
        "extra_data": {"type": "object"},
    },
}
RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": FORMAT,
        "test_output_format": FORMAT,
        "test_name_format": FORMAT,
        "visibility": VISIBILITY,
        "stdout_visibility": VISIBILITY,
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": TEST},
        "leaderboard": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "properties": {"name": {"type": "string"}, "value": {}, "order": {"enum": ["asc", "desc"]}},
            },
        },
    },
}


def check_format(document: dict) -> None:
    jsonschema.validate(document, RESULTS_SCHEMA)
    json.dumps(document, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere


@pytest.mark.parametrize("graded", the_class(), ids=lambda graded: graded.status)
def test_results_follow_the_specification_and_add_up(graded):
    document = gradescope.results_json(graded)
    check_format(document)
    tests = document["tests"]
    assert [test["name"] for test in tests] == [check.id for check in graded.checks]
    assert document["score"] == graded.score == sum(test["score"] for test in tests)
    assert sum(test["max_score"] for test in tests) == RUBRIC.max_score
    for test, check in zip(tests, graded.checks, strict=True):
        assert test["status"] == ("passed" if check.passed else "failed")  # explicit, for 0-point checks too
        assert check.message in test["output"] and check.expected in test["output"]
        assert (check.hint in test["output"]) is (not check.passed)
    # Nothing a student controls is rendered: every string is declared plain text.
    assert {document[key] for key in ("output_format", "test_output_format", "test_name_format")} == {"text"}
    assert {test["output_format"] for test in tests} == {test["name_format"] for test in tests} == {"text"}
    assert document["extra_data"]["status"] == graded.status and document["extra_data"]["flags"] == graded.flags


def test_the_summary_says_status_and_flags():
    graded = result("=1+1", "error", {"experiment"}, flags=("duplicate_models",), isolated=False)
    graded.message = "cell 4 raised NameError"
    output = gradescope.results_json(graded, execution_seconds=12.4)
    assert output["execution_time"] == 12
    assert output["output"].splitlines() == [
        "Score: 1 / 16.",
        "Status: error (a cell raised an error; the checks graded what the notebook had left in MLflow by then).",
        "cell 4 raised NameError",
        "Flags: duplicate_models, not_isolated.",
    ]


def test_results_in_spanish():
    graded = result(HOSTILE, "timeout", {"experiment"})
    document = gradescope.results_json(graded, language="es")
    check_format(document)
    assert document["output"].splitlines()[:2] == [
        "Puntuación: 1 / 16.",
        "Estado: timeout (el notebook superó el tiempo permitido y se detuvo; se calificó lo que había dejado en "
        "MLflow).",
    ]
    runs = document["tests"][1]["output"].splitlines()
    assert runs[0].startswith("Qué se encontró: ") and runs[1].startswith("Qué se pide: ")
    assert runs[2] == "Qué hacer: hint for runs"


def test_the_bundle_has_setup_and_run_autograder_at_its_root_and_no_solution(tmp_path):
    bundle = tmp_path / "autograder.zip"
    assert cli.main(["gradescope-bundle", "--rubric", str(RUBRIC_PATH), "--out", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as archive:
        members = {info.filename: info for info in archive.infolist()}
        archive.extractall(tmp_path / "source")
    for script in ("setup.sh", "run_autograder"):
        assert members[script].external_attr >> 16 & 0o111, f"{script} must be executable"
        assert subprocess.run(["bash", "-n", str(tmp_path / "source" / script)]).returncode == 0
    assert {"rubric.toml", "requirements.lock", "pyproject.toml", "grader/__main__.py", "coursekit/housing.py"} <= set(
        members
    )
    assert "grader/locales/es/report.toml" in members and "grader/templates/index.html.j2" in members
    assert not [name for name in members if name.startswith(("homework/", "lessons/")) or "__pycache__" in name]
    assert (tmp_path / "source" / "rubric.toml").read_bytes() == RUBRIC_PATH.read_bytes()
    setup = (tmp_path / "source" / "setup.sh").read_text()
    assert "bubblewrap" in setup and "-r requirements.lock" in setup and "uv==0." in setup
    if (gradescope.sandbox.host_data_home() / "cal_housing_py3.pkz").is_file():
        assert "data/cal_housing_py3.pkz" in members  # no download needed when Gradescope builds the image


def test_a_rubric_that_does_not_load_makes_no_bundle(tmp_path):
    broken = tmp_path / "broken.rubric.toml"
    broken.write_text('homework = "x"\n')
    assert cli.main(["gradescope-bundle", "--rubric", str(broken), "--out", str(tmp_path / "a.zip")]) == 2
    assert not (tmp_path / "a.zip").exists()


@pytest.mark.parametrize("language", ["en", "es"])
def test_an_empty_submission_gets_results_that_say_so(tmp_path, language):
    (tmp_path / "submission").mkdir()
    path = gradescope.run(tmp_path, RUBRIC, language)
    document = json.loads(path.read_text())
    check_format(document)
    assert document["score"] == 0 and document["extra_data"]["status"] == "missing_notebook"
    assert {test["status"] for test in document["tests"]} == {"failed"}
    meaning = {"en": "no notebook was found in the submission", "es": "no se encontró ningún notebook en la entrega"}
    assert meaning[language] in document["output"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["results", "submission"]  # nothing left behind


@pytest.mark.slow
def test_run_autograder_grades_a_submission_in_a_fake_autograder_root(tmp_path):
    """The bundle's own run_autograder and grader code, as Gradescope runs them, with AUTOGRADER_ROOT for /autograder.

    The fake root's .venv is a link to the kit's environment (setup.sh builds a real one on Gradescope), which the
    sandbox would not mount under that name: this test runs the notebook without it, as tests/test_self_check does.
    """
    bundle = gradescope.build_bundle(RUBRIC_PATH, tmp_path / "autograder.zip")
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    (root / "source" / ".venv").symlink_to(REPO / ".venv")
    tiny_notebook(root / "submission" / "homework-195.ipynb")
    environment = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_SANDBOX": "off", "PYTHONPATH": ""}
    done = subprocess.run(
        ["bash", str(root / "source" / "run_autograder"), "--lang", "es"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((root / "results" / "results.json").read_text())
    check_format(document)
    passed = {test["name"] for test in document["tests"] if test["status"] == "passed"}
    assert passed == {"experiment", "run_fields"} and document["score"] == 3.0
    assert document["extra_data"]["status"] == "graded" and document["extra_data"]["language"] == "es"
    runs = next(test for test in document["tests"] if test["name"] == "runs")
    assert runs["score"] == 0 and runs["max_score"] == 2 and "Qué hacer:" in runs["output"]
    assert document["output"].startswith("Puntuación: 3 / 16.\nEstado: graded")
    assert sorted(entry.name for entry in root.iterdir()) == ["results", "source", "submission"]
