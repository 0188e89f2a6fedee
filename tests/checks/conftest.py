"""Helpers for the tests of each check kind: a rubric holding the checks under test, and small real stores."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nbformat
import pytest

from grader import inspect, score
from grader.rubric import load

REPO = Path(__file__).resolve().parents[2]
HOMEWORK_RUBRIC = REPO / "homework" / "homework-195.rubric.toml"
EXPERIMENT, MODEL = "hw", "m"


def _toml(value) -> str:
    return json.dumps(value) if isinstance(value, str | list | bool) else repr(value)


def rubric_with(folder: Path, *checks: dict, language: str | None = None):
    """A rubric with homework-195's data, tolerances and limits, and these checks (id = kind unless given)."""
    text = HOMEWORK_RUBRIC.read_text()
    top = text[: text.index("[[checks]]")].replace("max_score = 16\n", "").replace('language = "en"\n', "")
    limits = text[text.index("[limits]") :]
    if language:
        top = top.replace('homework = "homework-195"\n', f'homework = "homework-195"\nlanguage = "{language}"\n')
    tables = []
    for check in checks:
        entries = {"id": check["kind"], "points": 1, "hint": "do it", "hint_es": "hazlo", **check}
        tables.append("[[checks]]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in entries.items()))
    path = folder / f"rubric-{len(list(folder.glob('rubric-*.toml')))}.toml"
    path.write_text(top + "\n".join(tables) + "\n" + limits)
    return load(path)


def graded(facts, rubric, notebook=None, language=None) -> dict:
    """Check id -> Check, scored on ``facts``."""
    checks, _ = score.score(facts, notebook or nbformat.v4.new_notebook(), rubric, language)
    return {check.id: check for check in checks}


class Store:
    """A submission's folder with an MLflow store written through MLflow's own client (as a notebook's would)."""

    def __init__(self, workdir: Path):
        from mlflow import MlflowClient

        self.workdir = workdir
        uri = f"sqlite:///{workdir}/mlflow.db"
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=(workdir / "mlruns").as_uri())

    def run(self, name: str = "") -> str:
        run = self.client.create_run(self.experiment_id, run_name=name or None)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def artifact(self, run_id: str, path: str, content: bytes) -> Path:
        folder = Path(self.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target

    def version(self, run_id: str, tags: dict | None = None, description: str | None = None) -> str:
        if not self.client.search_registered_models(f"name = '{MODEL}'"):
            self.client.create_registered_model(MODEL)
        return self.client.create_model_version(
            MODEL, f"runs:/{run_id}/model", run_id, tags=tags, description=description
        ).version

    def stage(self, version: str, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.client.transition_model_version_stage(MODEL, version, stage)

    def read(self, rubric) -> inspect.Inspection:
        return inspect.inspect_store(self.workdir, nbformat.v4.new_notebook(), rubric)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    return Store(workdir)
