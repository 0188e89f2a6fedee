"""Inspection helpers that decide what the grader trusts: where models live, where MLflow was pointed."""

from __future__ import annotations

import sqlite3
from importlib import metadata

import nbformat
import pytest

from grader import inspect
from grader.inspect import _inside, _refuse_foreign_schema, _where_mlflow_pointed


@pytest.mark.parametrize(
    ("location", "inside"),
    [
        ("{work}/mlruns/1/models/m-1/artifacts", True),
        ("file://{work}/mlruns/1/models/m-1/artifacts", True),
        ("{work}/../elsewhere/artifacts", False),
        ("/tmp/artifacts", False),
        ("s3://bucket/models/m-1", False),
        ("mlflow-artifacts:/1/models/m-1/artifacts", False),
    ],
)
def test_only_locations_inside_the_working_directory_are_trusted(tmp_path, location, inside):
    work = tmp_path / "work"
    work.mkdir()
    assert _inside(location.format(work=work), work.resolve()) is inside


def test_a_symlink_out_of_the_working_directory_is_outside(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mlruns").symlink_to(tmp_path)
    assert not _inside(str(work / "mlruns" / "m-1"), work.resolve())


def notebook_with(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import mlflow"), nbformat.v4.new_code_cell(source)]
    )


@pytest.mark.parametrize(
    "source",
    [
        'mlflow.set_tracking_uri("http://localhost:5000")',
        'os.environ["MLFLOW_TRACKING_URI"] = "http://localhost:5000"',
    ],
)
def test_where_the_notebook_pointed_mlflow_is_named(source):
    message = _where_mlflow_pointed(notebook_with(source))
    assert "http://localhost:5000" in message and "points MLflow elsewhere" in message


def test_a_notebook_that_did_not_point_mlflow_anywhere_gets_a_generic_hint():
    assert "default tracking store" in _where_mlflow_pointed(notebook_with("print(1)"))


def test_a_store_with_planted_views_or_triggers_is_refused(tmp_path):
    from mlflow import MlflowClient

    store = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{store}").search_experiments()
    _refuse_foreign_schema(store)  # what MLflow itself creates (its own trigger included) passes

    with sqlite3.connect(store) as connection:
        connection.execute(
            "CREATE VIEW forever_metrics AS WITH RECURSIVE forever(n) AS "
            "(SELECT 1 UNION ALL SELECT n + 1 FROM forever) "
            "SELECT n FROM forever"
        )
    connection.close()
    with pytest.raises(ValueError, match="view 'forever_metrics'"):
        _refuse_foreign_schema(store)


@pytest.mark.parametrize("damage", [None, "not json", '[["trigger", "only two"]]', '{"trigger": 1}'])
def test_mlflow_schema_allow_list_is_cached_per_version_and_relearnt_when_damaged(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    inspect._mlflow_schema_extras.cache_clear()
    monkeypatch.setattr(inspect, "_mlflow_schema_extras", inspect._mlflow_schema_extras.__wrapped__)
    learnt = inspect._mlflow_schema_extras()
    assert any(kind == "trigger" for kind, _, _ in learnt)  # MLflow's own trigger: the list is not empty
    cached = inspect._schema_cache_path()
    assert cached.parent.parent == tmp_path and metadata.version("mlflow") in cached.name

    if damage is not None:
        cached.write_text(damage)
    else:  # a valid cache is what is used: nothing learnt again
        monkeypatch.setattr(inspect, "_fresh_store_extras", lambda: pytest.fail("the cache was not used"))
    assert inspect._mlflow_schema_extras() == learnt
    assert inspect._parse_extras(cached.read_text()) == learnt
