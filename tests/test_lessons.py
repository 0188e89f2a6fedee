"""Every lesson runs end to end offline with its default parameters, passes its own assert cells
(papermill stops on the first failing cell) and prints no warning it does not explain."""

import pytest

from tests.notebooks import REPO, execute, unexplained_warnings

LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb"))


def test_lessons_exist():
    assert len(LESSONS) >= 5, [lesson.name for lesson in LESSONS]


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.stem for lesson in LESSONS])
def test_lesson_runs_clean(lesson, tmp_path):
    executed = execute(lesson, tmp_path)
    assert unexplained_warnings(executed) == []
    assert (tmp_path / "mlflow.db").exists(), "the lesson should use the default sqlite store of its folder"
