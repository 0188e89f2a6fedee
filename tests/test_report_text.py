"""What a kernel printed reaches the report as text, whatever it holds: never a lost result.json or feedback."""

import json
from pathlib import Path

import nbformat

from grader import report
from grader.result import Result
from grader.rubric import load

RUBRIC = load(Path(__file__).resolve().parents[1] / "homework" / "homework-195.rubric.toml")


def test_lone_surrogates_in_outputs_are_written_as_escapes(tmp_path):
    printed = "name \udcff" + "x" * RUBRIC.limits.output_bytes  # long enough to be clipped too
    cell = nbformat.v4.new_code_cell("print(name)", outputs=[nbformat.v4.new_output("stream", text=printed)])
    report.write_submission(Result("ana", "graded", 0, 16), nbformat.v4.new_notebook(cells=[cell]), tmp_path, RUBRIC)
    assert json.loads((tmp_path / "result.json").read_text())["student"] == "ana"
    assert (tmp_path / "feedback.html").is_file()
    kept = nbformat.read(tmp_path / "ana.ipynb", as_version=4).cells[0].outputs[0].text
    assert kept.startswith("name \\udcff") and "truncated by the grader" in kept
