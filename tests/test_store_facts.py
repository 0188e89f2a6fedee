"""Reading a real MLflow store fact by fact: models resolve as load_model would, a dangling fact costs only itself,
and the read is bounded in rows and time."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient

from grader import inspect
from grader.rubric import load

RUBRIC = load(Path(__file__).resolve().parents[1] / "homework" / "homework-195.rubric.toml")
NOTEBOOK = nbformat.v4.new_notebook()


class Store:
    """A student's working folder with an MLflow store written through MLflow's own client."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        uri = f"sqlite:///{workdir}/mlflow.db"
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment_id = self.client.create_experiment(
            RUBRIC.experiment, artifact_location=(workdir / "mlruns").as_uri()
        )
        self.client.create_registered_model(RUBRIC.registered_model)

    def run_with_model(self, rmse: float) -> tuple[str, str]:
        run = self.client.create_run(self.experiment_id)
        self.client.log_param(run.info.run_id, "model_type", "ridge")
        self.client.log_metric(run.info.run_id, "rmse_test", rmse)
        self.client.log_metric(run.info.run_id, "r2_test", 0.6)
        model = self.client.create_logged_model(self.experiment_id, source_run_id=run.info.run_id)
        self.client.finalize_logged_model(model.model_id, "READY")
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id, model.model_id

    def register(self, run_id: str, model_id: str, stage: str | None = "Production") -> str:
        version = self.client.create_model_version(
            RUBRIC.registered_model, f"models:/{model_id}", run_id, model_id=model_id
        ).version
        if stage:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.client.transition_model_version_stage(RUBRIC.registered_model, version, stage)
        return version

    def location(self, model_id: str) -> str:
        return self.client.get_logged_model(model_id).artifact_location

    def read(self) -> inspect.Inspection:
        return inspect.inspect_store(self.workdir, NOTEBOOK, RUBRIC)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    workdir = tmp_path / "work"
    workdir.mkdir()
    # create_model_version looks a models:/m-ID source up in the global tracking store, as a notebook's would.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    return Store(workdir)


def test_production_resolves_to_the_storage_location_that_load_model_serves(store):
    """An UPDATE of storage_location behind MLflow's back makes models:/NAME/Production serve another model: the
    grader must score what is served, not what the version's source says."""
    best_run, best_model = store.run_with_model(0.45)
    _, worst_model = store.run_with_model(0.90)
    store.register(best_run, best_model)
    with sqlite3.connect(store.workdir / "mlflow.db") as connection:
        connection.execute("UPDATE model_versions SET storage_location = ?", (store.location(worst_model),))
    connection.close()

    facts = store.read()
    assert facts.production.version == "1" and facts.production.run_id == best_run
    assert facts.production.location == store.location(worst_model)
    labels = inspect.models_to_score(facts, store.workdir)
    assert facts.production.model_key == facts.model_labels[worst_model]  # the worst model's files, scored once
    assert len(labels) == 2


def test_a_dangling_logged_model_costs_only_its_own_version(store):
    """v1's logged model deleted, v2 from the best run in Production: v2 is graded, v1 is named as unreadable.
    (MLflow records where a version's files are when it is made; without that record, as in stores older
    than 3.0's, its source models:/m-ID is looked up, and that is what dangles.)"""
    first_run, first_model = store.run_with_model(0.70)
    best_run, best_model = store.run_with_model(0.45)
    store.register(first_run, first_model, stage=None)
    store.client.delete_logged_model(first_model)
    store.register(best_run, best_model)
    with sqlite3.connect(store.workdir / "mlflow.db") as connection:
        connection.execute("UPDATE model_versions SET storage_location = NULL WHERE version = 1")
    connection.close()

    facts = store.read()
    assert facts.problem == ""
    assert facts.production.version == "2" and facts.production.location == store.location(best_model)
    assert [run.run_id for run in facts.runs] == [best_run, first_run]
    assert any(fact.startswith("where version 1's files are") for fact in facts.unread), facts.unread


def test_every_version_is_read_across_pages(store, monkeypatch):
    run_id, model_id = store.run_with_model(0.5)
    for _ in range(3):
        store.register(run_id, model_id, stage=None)
    store.register(run_id, model_id)
    one_per_page = MlflowClient.search_model_versions

    def paged(self, *args, **kwargs):
        return one_per_page(self, *args, **{**kwargs, "max_results": 1})

    monkeypatch.setattr(MlflowClient, "search_model_versions", paged)
    facts = store.read()
    assert [version.version for version in facts.versions] == ["1", "2", "3", "4"]
    assert facts.production.version == "4"


def test_aliases_are_read_from_the_registered_model(store):
    """search_model_versions returns versions without their aliases: the registered model has them."""
    run_id, model_id = store.run_with_model(0.5)
    version = store.register(run_id, model_id, stage=None)
    store.client.set_registered_model_alias(RUBRIC.registered_model, "champion", version)
    assert store.read().versions[0].aliases == ["champion"]


def test_a_store_with_too_many_rows_in_a_table_is_refused(store, monkeypatch):
    for _ in range(4):
        store.run_with_model(0.5)
    monkeypatch.setattr(inspect, "MAX_TABLE_ROWS", 3)
    facts = store.read()
    assert "could not be read" in facts.problem and "more than 3 rows" in facts.problem
    assert facts.runs == []


def test_reading_a_store_stops_at_its_deadline(store, monkeypatch):
    store.run_with_model(0.5)
    monkeypatch.setattr(inspect, "STORE_SECONDS", -1)  # already past it when reading starts
    facts = store.read()
    assert "TimeoutError" in facts.problem and "took longer than" in facts.problem


def test_a_slow_statement_is_interrupted_by_sqlite_itself(tmp_path, monkeypatch):
    """A query that runs long within one statement is stopped by SQLite's progress handler, not after it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path}/slow.db")
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    with pytest.raises(TimeoutError), inspect._store_deadline(0.2), engine.connect() as connection:
        connection.execute(text(forever))


def test_probe_labels_are_the_graders_own_whatever_the_store_calls_its_models(store):
    """Labels never come from the store: a logged model id planted as "production" or "model-0" behind MLflow's
    back cannot pose as the Production version's files, which here are a third folder."""
    best_run, best_model = store.run_with_model(0.45)
    store.run_with_model(0.90)
    store.register(best_run, best_model)
    with sqlite3.connect(store.workdir / "mlflow.db") as connection:
        connection.execute("UPDATE model_versions SET storage_location = ?", (str(store.workdir / "elsewhere"),))
    connection.close()
    facts = store.read()
    labels = inspect.models_to_score(facts, store.workdir)
    production_folder = labels[facts.production.model_key][1]
    assert production_folder == store.workdir / "elsewhere"
    assert sorted(labels) == ["model-0", "model-1", "model-2"]
