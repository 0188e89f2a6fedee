"""Every lesson runs end to end offline with its default parameters, passes its own assert cells
(papermill stops on the first failing cell) and prints no warning it does not explain."""

import ast
import importlib

import nbformat
import pytest

from tests.notebooks import REPO, execute, unexplained_warnings

LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb"))
# Lessons that start services run end to end in their own module, once, with a home for the services and a skip
# that names what is missing (lesson 06: PostgreSQL). Left out of the generic run below, not skipped in it.
RUN_BY_THEIR_OWN_TEST = {"06_team_server": "tests.test_team"}
RUN_HERE = [lesson for lesson in LESSONS if lesson.stem not in RUN_BY_THEIR_OWN_TEST]


def test_lessons_exist():
    assert len(LESSONS) >= 5, [lesson.name for lesson in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.stem for lesson in LESSONS])
def test_lesson_is_committed_without_outputs(lesson):
    notebook = nbformat.read(lesson, as_version=4)
    nbformat.validate(notebook)  # cell ids included
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.id for cell in code_cells if cell.outputs or cell.execution_count is not None] == []


def log_model_calls(notebook_path) -> list[tuple[str, set[str]]]:
    """(flavor, keyword arguments) of every ``mlflow.<flavor>.log_model(...)`` call in the notebook's code."""
    calls = []
    for cell in nbformat.read(notebook_path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "log_model":
                flavor = node.func.value.attr if isinstance(node.func.value, ast.Attribute) else "?"
                calls.append((flavor, {keyword.arg for keyword in node.keywords}))
    return calls


def test_every_lesson_log_model_names_its_requirements():
    """Without pip_requirements, each log_model spends seconds inferring them: the lessons never make it."""
    missing = [
        f"{lesson.stem}: mlflow.{flavor}.log_model"
        for lesson in LESSONS
        for flavor, keywords in log_model_calls(lesson)
        if "pip_requirements" not in keywords
    ]
    assert missing == []


@pytest.mark.parametrize("stem", RUN_BY_THEIR_OWN_TEST)
def test_lessons_left_out_here_are_run_by_their_own_test(stem):
    """A lesson left out of the generic run must exist and be the one its module runs end to end."""
    module = importlib.import_module(RUN_BY_THEIR_OWN_TEST[stem])
    assert stem in [lesson.stem for lesson in LESSONS]
    assert module.LESSON.stem == stem
    assert "slow" in [mark.name for mark in module.test_lesson_runs_clean.pytestmark]


@pytest.mark.slow
@pytest.mark.parametrize("lesson", RUN_HERE, ids=[lesson.stem for lesson in RUN_HERE])
def test_lesson_runs_clean(lesson, tmp_path):
    executed = execute(lesson, tmp_path)
    assert unexplained_warnings(executed) == []
    assert (tmp_path / "mlflow.db").exists(), "the lesson should use the default sqlite store of its folder"
