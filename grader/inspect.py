"""Read what a notebook left in its MLflow store, and name the models the probe must re-score.

The store is read here, in the grader's process, with ``MlflowClient`` after the kernel has exited: nothing
the notebook printed is trusted. Models are loaded only by the probe (``grader/probe.py``), in the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import nbformat

from grader.probe import ModelScore
from grader.rubric import Rubric

TRACKING_URI_IN_SOURCE = re.compile(
    r"set_tracking_uri\(\s*([^)\n]{1,200})\)|MLFLOW_TRACKING_URI['\"]?\s*\]?\s*=\s*([^\n]{1,200})"
)
# MLflow keeps one SQLAlchemy store per URI in a process-wide cache; opening stores from several grading
# threads at once races on that set-up, while reading is quick, so one submission reads at a time.
_STORE_LOCK = threading.Lock()


def warm_up() -> None:
    """Import MLflow's client and sqlite stores ahead of the first inspection (seconds on a cold start)."""
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow import MlflowClient  # noqa: F401

    with _STORE_LOCK:
        _mlflow_schema_extras()


@dataclass
class RunFacts:
    run_id: str
    name: str
    model_type: str | None
    metrics: dict[str, float]
    missing: list[str]  # required params/tags/metrics this run lacks
    ready_models: list[str]  # ids of its logged models that saved completely, newest last
    failed_models: int


@dataclass
class VersionFacts:
    version: str
    run_id: str | None
    stage: str
    aliases: list[str]
    location: str  # where its files are


@dataclass
class Inspection:
    problem: str = ""  # why the store could not be read; empty when it could
    experiment_found: bool = False
    experiment_names: list[str] = field(default_factory=list)
    runs: list[RunFacts] = field(default_factory=list)  # in the acceptance criterion's order, best first
    registered: bool = False
    versions: list[VersionFacts] = field(default_factory=list)
    production: VersionFacts | None = None
    best_model_id: str | None = None
    model_locations: dict[str, str] = field(default_factory=dict)  # logged model id -> where its files are
    outside: list[str] = field(default_factory=list)  # locations outside the working directory
    scores: dict[str, ModelScore] = field(default_factory=dict)  # "production" and, if different, "best"

    @property
    def best(self) -> RunFacts | None:
        return self.runs[0] if self.runs else None

    def summary(self, rank_by: str) -> dict:
        """The runs, best run and Production version, as plain data for the feedback page."""
        production_run = self.production.run_id if self.production else None
        runs = [
            {
                "rank": rank,
                "run_id": run.run_id,
                "name": run.name,
                "model_type": run.model_type,
                "metrics": run.metrics,
                "metric": run.metrics.get(rank_by),
                "has_model": bool(run.ready_models),
                "production": run.run_id == production_run,
            }
            for rank, run in enumerate(self.runs, start=1)
        ]
        best = runs[0] if runs and runs[0]["metric"] is not None else None
        if best:
            best = {**best, "metric_text": f"{best['metric']:.4f}"}
        production = {"version": self.production.version, "run_id": production_run} if self.production else None
        return {"runs": runs, "best": best, "production": production}


def inspect_store(workdir: Path, notebook: nbformat.NotebookNode, rubric: Rubric) -> Inspection:
    """Facts about the submission's MLflow store."""
    database = workdir / "mlflow.db"
    if not database.exists() and not database.is_symlink():
        return Inspection(problem=f"the notebook left no MLflow store in its folder. {_where_mlflow_pointed(notebook)}")
    try:
        with tempfile.TemporaryDirectory(prefix="grader-store-") as private, _STORE_LOCK:
            copy = _private_copy(database, Path(private), rubric.limits.file_mb * 2**20)
            _refuse_foreign_schema(copy)
            facts = _read_store(f"sqlite:///{copy}", workdir, rubric)
    except Exception as error:  # a store the notebook damaged, replaced or filled with nonsense
        return Inspection(problem=f"the MLflow store could not be read: {type(error).__name__}: {str(error)[:300]}")
    if not facts.experiment_found:
        facts.problem = (
            f"the MLflow store in the notebook's folder has no experiment '{rubric.experiment}' (it has "
            f"{', '.join(facts.experiment_names) or 'none'}). {_where_mlflow_pointed(notebook)}"
        )
    return facts


def _private_copy(database: Path, folder: Path, max_bytes: int) -> Path:
    """The store as a file of the grader's own. Never through a link: a notebook could point mlflow.db at another
    store on the machine to have that one graded. And SQLite writes beside the file it opens, even to read."""
    try:
        source = os.open(database, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise ValueError(f"mlflow.db is not a regular file (a symbolic link?): {error.strerror}") from error
    with os.fdopen(source, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ValueError("mlflow.db is not a regular file")
        copy = folder / "mlflow.db"
        with copy.open("wb") as sink:
            while chunk := stream.read(1 << 20):
                if sink.tell() + len(chunk) > max_bytes:
                    raise ValueError(f"mlflow.db is larger than {max_bytes} bytes")
                sink.write(chunk)
    return copy


def _refuse_foreign_schema(database: Path) -> None:
    """Views and triggers other than MLflow's own were planted behind its back: they can make reading the store
    hang (a recursive view in place of a table) or rewrite what the grader reads."""
    planted = sorted(_schema_extras(database) - _mlflow_schema_extras())
    if planted:
        named = ", ".join(f"{kind} {name!r}" for kind, name, _ in planted[:5])
        raise ValueError(f"it holds objects MLflow never creates ({named}): it was edited behind MLflow's back")


def _schema_extras(database: Path) -> set[tuple[str, str, str]]:
    """The store's objects other than tables and indexes, with their SQL."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT type, name, sql FROM sqlite_master WHERE type NOT IN ('table', 'index')")
        extras = {(kind, name, sql or "") for kind, name, sql in rows}
    connection.close()
    return extras


@cache
def _mlflow_schema_extras() -> frozenset[tuple[str, str, str]]:
    """What a store that this MLflow version creates holds besides tables and indexes (e.g. its own triggers).

    Learning it takes a fresh store (a second of migrations), so it is kept per MLflow version in the grader's
    user cache; a cache that cannot be read is learnt again. Student code cannot write there: in the sandbox
    only its own working directory is writable."""
    cached = _schema_cache_path()
    with contextlib.suppress(OSError, ValueError):
        return _parse_extras(cached.read_text())
    extras = _fresh_store_extras()
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.{threading.get_ident()}")
        partial.write_text(json.dumps(sorted(extras)))
        os.replace(partial, cached)  # another grading process may write it at the same moment
    return extras


def _schema_cache_path() -> Path:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "mlflow-grader" / f"store-schema-mlflow-{metadata.version('mlflow')}.json"


def _parse_extras(text: str) -> frozenset[tuple[str, str, str]]:
    entries = json.loads(text)
    if not isinstance(entries, list) or not all(
        isinstance(entry, list) and len(entry) == 3 and all(isinstance(part, str) for part in entry)
        for entry in entries
    ):
        raise ValueError("not a list of [type, name, sql] entries")
    return frozenset(tuple(entry) for entry in entries)


def _fresh_store_extras() -> frozenset[tuple[str, str, str]]:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="grader-reference-store-") as folder:
        reference = Path(folder) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{reference}").search_experiments()
        return frozenset(_schema_extras(reference))


def models_to_score(facts: Inspection, workdir: Path) -> dict[str, tuple[Path, Path]]:
    """``{"production": ..., "best": ...}`` as (working directory, model folder inside it) for the probe.

    The grader resolves the Production version itself, from its private copy of the store, the way
    ``models:/NAME/Production`` resolves: the newest version in the stage, then its model's files."""
    locations = {}
    if facts.production and facts.production.location and facts.production.location not in facts.outside:
        locations["production"] = facts.production.location
    best_differs = facts.production is None or facts.best is None or facts.production.run_id != facts.best.run_id
    if facts.best_model_id and best_differs:
        locations["best"] = facts.model_locations[facts.best_model_id]
    return {label: (workdir, Path(urlparse(location).path)) for label, location in locations.items()}


def _read_store(uri: str, workdir: Path, rubric: Rubric) -> Inspection:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    facts = Inspection(experiment_names=sorted(experiment.name for experiment in client.search_experiments()))
    inside = workdir.resolve()
    experiment = client.get_experiment_by_name(rubric.experiment)
    if experiment is not None:
        facts.experiment_found = True
        models = _all_pages(lambda token: client.search_logged_models([experiment.experiment_id], page_token=token))
        ready, failed = {}, {}
        for model in sorted(models, key=lambda model: model.creation_timestamp):
            if not _inside(model.artifact_location, inside):
                facts.outside.append(model.artifact_location)
                continue
            if model.status == LoggedModelStatus.READY:
                ready.setdefault(model.source_run_id, []).append(model.model_id)
                facts.model_locations[model.model_id] = model.artifact_location
            else:
                failed[model.source_run_id] = failed.get(model.source_run_id, 0) + 1
        runs = _all_pages(
            lambda token: client.search_runs(
                [experiment.experiment_id], order_by=[f"metrics.{rubric.rank_by} ASC"], page_token=token
            )
        )
        facts.runs = [
            _run_facts(run, rubric, ready.get(run.info.run_id, []), failed.get(run.info.run_id, 0)) for run in runs
        ]
        best = facts.best
        if best and rubric.rank_by in best.metrics and best.ready_models:
            facts.best_model_id = best.ready_models[-1]
    registered = client.search_registered_models(filter_string=f"name = '{rubric.registered_model}'")
    if registered:
        facts.registered = True
        facts.versions = sorted(
            (
                _version_facts(client, version)
                for version in client.search_model_versions(f"name = '{rubric.registered_model}'")
            ),
            key=lambda version: int(version.version),
        )
        facts.production = _production(facts.versions, rubric)
        for version in facts.versions:
            if version.location and not _inside(version.location, inside):
                facts.outside.append(version.location)
    return facts


def _all_pages(search) -> list:
    items, token = [], None
    while True:
        page = search(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _run_facts(run, rubric: Rubric, ready_models: list[str], failed_models: int) -> RunFacts:
    data = run.data
    label = rubric.param_or_tag[0]  # what the feedback calls each run by, e.g. its model_type
    model_type = data.params.get(label) or data.tags.get(label)
    missing = [name for name in rubric.param_or_tag if name not in data.params and name not in data.tags]
    missing += [name for name in rubric.metrics if name not in data.metrics]
    return RunFacts(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        model_type=model_type,
        metrics={name: data.metrics[name] for name in rubric.metrics if name in data.metrics},
        missing=missing,
        ready_models=ready_models,
        failed_models=failed_models,
    )


def _version_facts(client, version) -> VersionFacts:
    location = version.source or ""
    # A version made from a logged model names it by model_id or, from some stores, only by its source URI.
    model_id = version.model_id or (location.removeprefix("models:/") if location.startswith("models:/m-") else None)
    if model_id:
        location = client.get_logged_model(model_id).artifact_location
    elif location.startswith("runs:/"):  # runs:/RUN_ID/PATH, the model's folder under the run's artifacts
        run_id, _, path = location.removeprefix("runs:/").partition("/")
        location = client.get_run(run_id).info.artifact_uri.rstrip("/") + (f"/{path}" if path else "")
    return VersionFacts(
        version=str(version.version),
        run_id=version.run_id,
        stage=version.current_stage or "None",
        aliases=sorted(version.aliases or []),
        location=location,
    )


def _production(versions: list[VersionFacts], rubric: Rubric) -> VersionFacts | None:
    """The version ``models:/NAME/Production`` (or ``@alias``) resolves to: the newest one holding it."""
    if rubric.production_by == "alias":
        holding = [version for version in versions if rubric.production_alias in version.aliases]
    else:
        holding = [version for version in versions if version.stage == rubric.production_stage]
    return holding[-1] if holding else None


def _inside(location: str, workdir: Path) -> bool:
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return False
    return Path(parsed.path).resolve().is_relative_to(workdir)


def _where_mlflow_pointed(notebook: nbformat.NotebookNode) -> str:
    for cell in notebook.cells:
        match = TRACKING_URI_IN_SOURCE.search(cell.source) if cell.cell_type == "code" else None
        if match:
            target = (match.group(1) or match.group(2)).strip()
            return (
                f"The notebook points MLflow elsewhere ({target}), where the grader cannot read it: "
                "remove that line and let MLflow use its default store."
            )
    return "Did the notebook run its MLflow cells and use MLflow's default tracking store?"
