"""The homework's student notebook and reference solution are what the generator makes from the one source."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from grader.assign import BEGIN, END, MarkerError, render, targets
from grader.rubric import load
from tests.test_lessons import LESSONS, log_model_calls

HOMEWORK = Path(__file__).resolve().parents[1] / "homework"
SOURCE = HOMEWORK / "src" / "homework-195.ipynb"
STUDENT = HOMEWORK / "homework-195.ipynb"
SOLUTION = HOMEWORK / "solution" / "homework-195.ipynb"


def code_of(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def solution_lines(source: str) -> list[str]:
    """The meaningful lines between the markers of a source notebook's code."""
    blocks = re.findall(rf"{re.escape(BEGIN)}\n(.*?){re.escape(END)}", source, flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if len(line) > 3 and not line.startswith("#")]


def test_generated_notebooks_are_what_the_generator_makes_now():
    assert targets(SOURCE) == (STUDENT, SOLUTION)
    student, solution = render(nbformat.read(SOURCE, as_version=4))
    assert STUDENT.read_text() == nbformat.writes(student) + "\n", "run: python -m grader.assign " + str(SOURCE)
    assert SOLUTION.read_text() == nbformat.writes(solution) + "\n", "run: python -m grader.assign " + str(SOURCE)


def test_student_notebook_holds_no_solution_code():
    source_code = code_of(nbformat.read(SOURCE, as_version=4))
    student = nbformat.read(STUDENT, as_version=4)
    student_code = code_of(student)
    hidden = solution_lines(source_code)
    assert len(hidden) > 20  # the source does mark its solution
    leaked = [line for line in hidden if line in student_code]
    assert leaked == []
    assert BEGIN not in student_code and END not in student_code
    assert student_code.count("raise NotImplementedError()") == source_code.count(BEGIN)
    assert all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in student.cells
        if cell.cell_type == "code"
    )


def test_solution_is_the_source_without_markers():
    solution_code = code_of(nbformat.read(SOLUTION, as_version=4))
    source_code = code_of(nbformat.read(SOURCE, as_version=4))
    assert BEGIN not in solution_code and "NotImplementedError" not in solution_code
    assert all(line in solution_code for line in solution_lines(source_code))


def test_sample_reference_submission_is_the_solution():
    # The end-to-end test grades this copy and expects full marks: that is the solution passing.
    assert (HOMEWORK / "examples" / "reference.ipynb").read_text() == SOLUTION.read_text()


def test_student_notebook_states_task_criterion_and_the_rubrics_points():
    rubric = load(HOMEWORK / "homework-195.rubric.toml")
    text = "\n".join(cell.source for cell in nbformat.read(STUDENT, as_version=4).cells if cell.cell_type == "markdown")
    assert 'order_by=["metrics.rmse_test ASC"]' in text and "Acceptance criterion" in text
    assert f"at least {rubric.min_runs} runs" in text
    for check, points in rubric.points.items():
        assert f"| `{check}` | {points} |" in text, f"the grading table disagrees with the rubric on {check}"
    assert "test_size=0.2, random_state=42" in code_of(nbformat.read(STUDENT, as_version=4))


def test_last_code_cell_of_the_solution_loads_production_and_predicts_five_rows():
    last = [cell for cell in nbformat.read(SOLUTION, as_version=4).cells if cell.cell_type == "code"][-1]
    assert 'load_model(f"models:/{MODEL_NAME}/Production")' in last.source
    assert ".head(5)" in last.source


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (f"x = 1\n{BEGIN}\ny = 2", "never closed"),
        (f"x = 1\n{END}", "without"),
        (f"{BEGIN}\n{BEGIN}\n{END}", "inside another"),
    ],
)
def test_unbalanced_markers_are_refused(source, problem):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    with pytest.raises(MarkerError, match=problem):
        render(notebook)


def test_placeholder_keeps_the_blocks_indentation():
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 42\n    {END}")]
    )
    student, solution = render(notebook)
    assert student.cells[0].source == "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert solution.cells[0].source == "def f():\n    return 42"


# Kit-only (the student edition has no solution): the lessons teach what the solution uses.
def test_lessons_show_every_log_model_the_homework_uses():
    """A student meets each flavor's log_model in a lesson, with a signature, an input example and its requirements."""
    homework = {flavor for flavor, _ in log_model_calls(SOLUTION)}
    shown = {
        flavor
        for lesson in LESSONS
        for flavor, keywords in log_model_calls(lesson)
        if {"name", "signature", "input_example", "pip_requirements"} <= keywords
    }
    assert homework - shown == set()
