"""The notebook harness fails when it must: a cell that raises, a self-check that fails, a warning nobody explains.

Each test writes a throwaway notebook to ``tmp_path`` and runs it through ``tests.notebooks.execute`` exactly as
the lesson tests do, so a harness that silently passed broken lessons would fail here.
"""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from papermill.exceptions import PapermillExecutionError

from tests.notebooks import WARNING_EXPLAINED_TAG, execute, unexplained_warnings

# What MLflow prints when a deprecated argument is used, raised the way libraries raise it.
MLFLOW_STYLE_WARNING = (
    "import warnings\n"
    "warnings.warn('The `artifact_path` parameter is deprecated. Please use `name` instead.', FutureWarning)"
)
# A cell after the failing one leaves this file behind if execution wrongly carries on.
REACHED_THE_END = "open('reached-the-end.txt', 'w').close()"


def write_notebook(folder, *cells):
    """Write a notebook made of ``cells`` (source strings, or (source, tags) pairs) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = new_notebook()
    for cell in cells:
        source, tags = cell if isinstance(cell, tuple) else (cell, [])
        notebook.cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    path = folder / "throwaway.ipynb"
    nbformat.write(notebook, path)
    return path


def test_a_cell_that_raises_fails_the_run(tmp_path):
    notebook = write_notebook(tmp_path / "src", "x = 1", "raise RuntimeError('the lesson is broken')", REACHED_THE_END)

    with pytest.raises(PapermillExecutionError) as failure:
        execute(notebook, tmp_path / "run")

    assert failure.value.ename == "RuntimeError"
    assert "the lesson is broken" in failure.value.evalue
    assert not (tmp_path / "run" / "reached-the-end.txt").exists(), "cells after the error must not run"


def test_a_failing_assert_cell_fails_the_run(tmp_path):
    notebook = write_notebook(
        tmp_path / "src", "runs = ['only one run']", "assert len(runs) == 10, 'expected ten runs'", REACHED_THE_END
    )

    with pytest.raises(PapermillExecutionError) as failure:
        execute(notebook, tmp_path / "run")

    assert failure.value.ename == "AssertionError"
    assert "expected ten runs" in failure.value.evalue
    assert not (tmp_path / "run" / "reached-the-end.txt").exists(), "cells after the failed check must not run"


def test_a_printed_warning_counts_only_when_its_cell_does_not_explain_it(tmp_path):
    notebook = write_notebook(
        tmp_path / "src",
        "print('a clean cell')",
        MLFLOW_STYLE_WARNING,  # untagged: must be reported
        (MLFLOW_STYLE_WARNING, [WARNING_EXPLAINED_TAG]),  # the same warning, explained: must not be
    )

    executed = execute(notebook, tmp_path / "run")

    found = unexplained_warnings(executed)
    assert found, "an untagged cell printed a warning: it must be reported"
    assert all(line.startswith("cell 1:") for line in found), found
    assert any("FutureWarning" in line for line in found), found
    explained_output = executed.cells[2].outputs
    assert any("FutureWarning" in output.get("text", "") for output in explained_output), "the tagged cell did warn"

    executed.cells[1].metadata["tags"] = [WARNING_EXPLAINED_TAG]
    assert unexplained_warnings(executed) == []


def test_logger_warnings_and_deprecation_notices_count_too(tmp_path):
    logger_line = "import sys; print('2026/11/22 10:00:00 WARNING mlflow.models.model: no signature', file=sys.stderr)"
    notice = "import sys; print('`artifact_path` is deprecated, use `name`', file=sys.stderr)"
    notebook = write_notebook(tmp_path / "src", logger_line, notice, "import sys; print('all good', file=sys.stderr)")

    found = unexplained_warnings(execute(notebook, tmp_path / "run"))

    assert [line.split(":")[0] for line in found] == ["cell 0", "cell 1"], found
