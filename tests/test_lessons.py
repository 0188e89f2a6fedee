"""Every lesson runs end to end offline with its default parameters, passes its own assert cells
(papermill stops on the first failing cell) and prints no warning it does not explain."""

import ast
import importlib
import subprocess

import nbformat
import pytest

from tests.notebooks import REPO, execute, unexplained_warnings

LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb"))
LINEAGE = REPO / "lessons" / "07_lineage.ipynb"
LINEAGE_SCRATCH = "07_lineage_scratch"  # the only thing lesson 07 may leave beside the notebook and MLflow's store
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


@pytest.fixture(scope="session")
def executed_lesson(tmp_path_factory):
    """Each lesson executed once per session, in its own folder: (folder, executed notebook)."""
    done = {}

    def run(lesson):
        if lesson not in done:
            workdir = tmp_path_factory.mktemp(lesson.stem)
            done[lesson] = workdir, execute(lesson, workdir)
        return done[lesson]

    return run


@pytest.mark.parametrize("stem", RUN_BY_THEIR_OWN_TEST)
def test_lessons_left_out_here_are_run_by_their_own_test(stem):
    """A lesson left out of the generic run must exist and be the one its module runs end to end."""
    module = importlib.import_module(RUN_BY_THEIR_OWN_TEST[stem])
    assert stem in [lesson.stem for lesson in LESSONS]
    assert module.LESSON.stem == stem
    assert "slow" in [mark.name for mark in module.test_lesson_runs_clean.pytestmark]


@pytest.mark.slow
@pytest.mark.parametrize("lesson", RUN_HERE, ids=[lesson.stem for lesson in RUN_HERE])
def test_lesson_runs_clean(lesson, executed_lesson):
    workdir, executed = executed_lesson(lesson)
    assert unexplained_warnings(executed) == []
    assert (workdir / "mlflow.db").exists(), "the lesson should use the default sqlite store of its folder"


def test_the_kit_ignores_the_lineage_lesson_scratch_folder():
    """Where a learner runs lesson 07 (lessons/), its git repository and DVC remote are never part of the kit."""
    if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("not a git checkout of the kit: nothing to ignore")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"lessons/{LINEAGE_SCRATCH}/project/train.py"], cwd=REPO)
    assert ignored.returncode == 0


@pytest.mark.slow
def test_the_lineage_lesson_keeps_its_project_inside_its_scratch_folder(executed_lesson):
    workdir, _ = executed_lesson(LINEAGE)
    assert sorted(path.name for path in workdir.iterdir()) == sorted(
        [LINEAGE.name, LINEAGE_SCRATCH, "mlflow.db", "mlruns"]
    )
    scratch = workdir / LINEAGE_SCRATCH
    project = scratch / "project"

    def git(*args, cwd=project):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    assert git("config", "--local", "user.email") == "lesson07@example.invalid"  # the project's, not global
    assert git("status", "--porcelain") == ""  # the dirty-tree demonstration put the committed file back
    assert git("tag") == "data-v1\ndata-v2"
    assert "analytics = false" in (project / ".dvc" / "config").read_text()  # every clone is quiet too
    assert (scratch / "dvc-machine" / "site-cache").is_dir()  # DVC's machine-wide cache stayed in the folder
    pushed = [path for path in (scratch / "dvc-remote" / "files" / "md5").rglob("*") if path.is_file()]
    assert len(pushed) == 2  # both data versions are on the remote
