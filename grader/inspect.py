"""Read what a notebook left in its MLflow store, and name the models the probe must re-score.

The store is read here, in the grader's process, with ``MlflowClient`` after the kernel has exited: nothing
the notebook printed is trusted. It is read fact by fact: a fact that cannot be read (a version whose logged
model was deleted, say) costs only the checks that need it, and says which fact and why. Models are resolved
the way ``mlflow.pyfunc.load_model`` resolves their URIs, and loaded only by the probe (``grader/probe.py``), in
the sandbox.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import os
import re
import sqlite3
import stat
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat

from grader.probe import ModelScore
from grader.rubric import Rubric

TRACKING_URI_IN_SOURCE = re.compile(
    r"set_tracking_uri\(\s*([^)\n]{1,200})\)|MLFLOW_TRACKING_URI['\"]?\s*\]?\s*=\s*([^\n]{1,200})"
)
# MLflow keeps one SQLAlchemy store per URI in a process-wide cache; opening stores from several grading
# threads at once races on that set-up, while reading is quick, so one submission reads at a time.
_STORE_LOCK = threading.Lock()
# Reading a store is bounded in time (every SQLite statement checks the clock) and in size: the file, then the
# rows of any one table, which bound what MLflow builds in the grader's memory. An honest homework store has a
# few hundred rows in its largest table.
STORE_SECONDS = 30
MAX_STORE_BYTES = 256 * 2**20
PROGRESS_STEPS = 10_000  # SQLite instructions between two looks at the clock
MAX_TABLE_ROWS = 100_000
# Every logged model is re-scored; past this many, the rest are left unverified (and so do not count).
MAX_SCORED_MODELS = 200
MAX_REFERENCE_HOPS = 5  # models:/NAME/VERSION may point at another models:/ URI; a chain this long is a loop
# A run's artifacts are listed by the grader itself, never through a link, and only as far as these bounds.
MAX_ARTIFACT_ENTRIES = 200  # files kept per run
# Entries looked at (files, folders, links) per submission: past it, a run's artifacts are not listed (and say so).
# Folders count too: a tree of empty folders would otherwise cost the grader time and keep nothing.
MAX_LISTED_ARTIFACTS = 10_000
MAX_ARTIFACT_DEPTH = 8
ARTIFACT_HEAD_BYTES = 2**20  # read of a file whose content a check tests
MAX_READS_PER_GLOB = 3  # files of one run read for one glob whose content a check tests
MAX_READ_BYTES = 128 * 2**20  # read per submission: an honest homework reads one small file per run
MAX_DATASET_INPUTS = 20  # per run
MAX_TEXT_CHARS = 5000  # of a tag's value, a description, a dataset's name or digest: MLflow's own limit
_deadline = {"at": float("inf")}  # when the current store read must stop (monotonic clock)


def warm_up() -> None:
    """Import MLflow's client and sqlite stores ahead of the first inspection (seconds on a cold start)."""
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow import MlflowClient  # noqa: F401

    _install_store_deadline()
    with _STORE_LOCK:
        _mlflow_schema_extras()


@dataclass
class DatasetInputFacts:
    name: str
    digest: str
    context: str  # its mlflow.data.context tag ("training", "validation"...), empty when it has none


@dataclass
class ArtifactFacts:
    path: str  # inside the run's artifact folder, with "/" between folders
    size: int  # bytes of the file itself
    head: bytes = b""  # its first ARTIFACT_HEAD_BYTES, when a check tests its content


@dataclass
class RunFacts:
    run_id: str
    name: str
    model_type: str | None  # what the feedback calls the run by: its first params_or_tags value (e.g. model_type)
    metrics: dict[str, float]  # the metrics the rubric's checks name
    missing: list[str]  # params/tags/metrics that the rubric's run_fields checks require and this run lacks
    model_ids: list[str]  # its logged models that say READY, with files inside the working directory; newest last
    failed_models: int  # its logged models that did not finish saving
    inputs: list[DatasetInputFacts] = field(default_factory=list)
    artifacts: list[ArtifactFacts] | None = None  # None: not listed (no check needs them, or see artifact_problem)
    artifact_problem: str = ""


@dataclass
class VersionFacts:
    version: str
    run_id: str | None
    stage: str
    aliases: list[str]
    location: str  # where load_model reads its files; empty when that could not be found out
    model_key: str = ""  # the probe label of those files (made by the grader: never a name from the store)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass
class Inspection:
    problem: str = ""  # why the store could not be read at all; empty when it could
    unread: list[str] = field(default_factory=list)  # facts that could not be read, each with why
    experiment_found: bool = False
    experiment_names: list[str] = field(default_factory=list)
    runs: list[RunFacts] = field(default_factory=list)  # in the acceptance criterion's order, best first
    registered: bool = False
    versions: list[VersionFacts] = field(default_factory=list)
    production: VersionFacts | None = None  # the served version: what the rubric's served selector resolves to
    rescored: list[VersionFacts] = field(default_factory=list)  # other versions whose files the probe re-scores
    model_description: str = ""  # the registered model's own
    model_locations: dict[str, str] = field(default_factory=dict)  # logged model id -> where its files are
    outside: list[str] = field(default_factory=list)  # locations outside the working directory
    unscored: list[str] = field(default_factory=list)  # logged models past MAX_SCORED_MODELS
    model_labels: dict[str, str] = field(default_factory=dict)  # logged model id -> its probe label
    scores: dict[str, ModelScore] = field(default_factory=dict)  # probe label -> the grader's re-scoring

    @property
    def best(self) -> RunFacts | None:
        return self.runs[0] if self.runs else None

    def run_scores(self, run: RunFacts) -> list[ModelScore]:
        """The grader's scores of the run's models that loaded and predicted, newest first."""
        scored = [self.scores.get(self.model_labels.get(model_id, "")) for model_id in reversed(run.model_ids)]
        return [score for score in scored if score is not None and score.ok]

    def run_score(self, run: RunFacts) -> ModelScore | None:
        """The grader's score of the run's newest model that loaded and predicted, if any did."""
        return next(iter(self.run_scores(run)), None)

    @property
    def production_score(self) -> ModelScore | None:
        return self.version_score(self.production)

    def version_score(self, version: VersionFacts | None) -> ModelScore | None:
        """The grader's re-scoring of the files a version serves, if the probe scored them."""
        return self.scores.get(version.model_key) if version is not None and version.model_key else None

    def version_at(self, selector) -> VersionFacts | None:
        """The version a selector names, as MLflow resolves it: the alias's, the newest in the stage, the number."""
        if selector.by == "alias":
            return next((version for version in self.versions if selector.name in version.aliases), None)
        if selector.by == "version":
            return next((version for version in self.versions if version.version == selector.name), None)
        in_stage = [version for version in self.versions if version.stage == selector.name]
        return max(in_stage, key=lambda version: int(version.version), default=None)

    def summary(self, rank_by: str) -> dict:
        """The runs, best run and Production version, as plain data for the feedback page."""
        production_run = self.production.run_id if self.production else None
        runs = []
        for rank, run in enumerate(self.runs, start=1):
            rescored = self.run_score(run)
            runs.append(
                {
                    "rank": rank,
                    "run_id": run.run_id,
                    "name": run.name,
                    "model_type": run.model_type,
                    "metrics": run.metrics,
                    "metric": run.metrics.get(rank_by),
                    "rescored": rescored.rmse if rescored else None,
                    "has_model": rescored is not None,
                    "production": run.run_id == production_run,
                }
            )
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
            copy = _private_copy(database, Path(private), MAX_STORE_BYTES)
            _refuse_foreign_schema(copy)
            _refuse_oversized(copy)
            with _store_deadline(STORE_SECONDS):
                facts = _read_store(f"sqlite:///{copy}", workdir, rubric)
    except Exception as error:  # a store the notebook damaged, replaced or filled with nonsense
        return Inspection(problem=f"the MLflow store could not be read: {type(error).__name__}: {str(error)[:300]}")
    missing = rubric.experiment is not None and not facts.experiment_found
    if missing and not any(fact.startswith("the experiment") for fact in facts.unread):
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


def _refuse_oversized(database: Path) -> None:
    """A store of plain tables may still hold millions of rows, which MLflow would build objects for."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            query = f"SELECT count(*) FROM (SELECT 1 FROM {quoted} LIMIT {MAX_TABLE_ROWS + 1})"
            (rows,) = connection.execute(query).fetchone()
            if rows > MAX_TABLE_ROWS:
                raise ValueError(f"its table {table!r} has more than {MAX_TABLE_ROWS} rows")


def _schema_extras(database: Path) -> set[tuple[str, str, str]]:
    """The store's objects other than tables and indexes, with their SQL."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT type, name, sql FROM sqlite_master WHERE type NOT IN ('table', 'index')")
        return {(kind, name, sql or "") for kind, name, sql in rows}


@cache
def _install_store_deadline() -> None:
    """Every SQLite connection MLflow opens checks the inspection's deadline as it steps through a statement."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def check_deadline(dbapi_connection, _record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            # A non-zero return makes SQLite abort the statement with "interrupted".
            dbapi_connection.set_progress_handler(lambda: int(time.monotonic() > _deadline["at"]), PROGRESS_STEPS)

    event.listen(Engine, "connect", check_deadline)


@contextlib.contextmanager
def _store_deadline(seconds: float):
    """Bound the store read in time (held under _STORE_LOCK, so one deadline at a time)."""
    _install_store_deadline()
    _deadline["at"] = time.monotonic() + seconds
    try:
        yield
    except Exception as error:  # MLflow and SQLAlchemy wrap SQLite's "interrupted" in their own exceptions
        if time.monotonic() > _deadline["at"] and not isinstance(error, TimeoutError):
            raise TimeoutError(f"reading it took longer than {seconds} s") from error
        raise
    finally:
        _deadline["at"] = float("inf")


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
    """Every logged model of the experiment's runs and the Production version's files, as ``{label: (working
    directory, model folder inside it)}`` for the probe. Labels are the grader's own (``model-N``, one per
    folder, so files that two names share are loaded once): an id from the store could be anything, even a
    label the grader uses for something else."""
    model_ids = [model_id for run in facts.runs for model_id in run.model_ids]
    facts.unscored = model_ids[MAX_SCORED_MODELS:]
    labels: dict[str, str] = {}  # location -> label, in the order the probe copies them: Production first
    for version in (facts.production, *facts.rescored):
        if version and version.location and _inside(version.location, workdir.resolve()):
            version.model_key = labels.setdefault(version.location, f"model-{len(labels)}")
    for model_id in model_ids[:MAX_SCORED_MODELS]:
        location = facts.model_locations[model_id]
        facts.model_labels[model_id] = labels.setdefault(location, f"model-{len(labels)}")
    return {label: (workdir, _local_path(location)) for location, label in labels.items()}


class _FactReader:
    """Reads one fact at a time: a failure is noted with the fact's name and costs only that fact."""

    def __init__(self, facts: Inspection):
        self.facts = facts

    def read(self, fact: str, read, default=None):
        if time.monotonic() > _deadline["at"]:
            raise TimeoutError(f"reading it took longer than {STORE_SECONDS} s")
        try:
            return read()
        except Exception as error:  # a row the notebook damaged or left dangling
            if time.monotonic() > _deadline["at"]:  # SQLite gave up on the clock: the whole read stops
                raise TimeoutError(f"reading it took longer than {STORE_SECONDS} s") from error
            self.facts.unread.append(f"{fact}: {type(error).__name__}: {str(error)[:200]}")
            return default


def _read_store(uri: str, workdir: Path, rubric: Rubric) -> Inspection:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    facts = Inspection()
    reader = _FactReader(facts)
    experiments = reader.read(
        "the experiments", lambda: _all_pages(lambda token: client.search_experiments(page_token=token)), []
    )
    facts.experiment_names = sorted(experiment.name for experiment in experiments)
    experiment = next((item for item in experiments if item.name == rubric.experiment), None)
    if experiment is not None:
        facts.experiment_found = True
        _read_runs(client, reader, experiment.experiment_id, workdir.resolve(), rubric)
    if rubric.registered_model is None:
        return facts
    registered = reader.read(
        f"the registered model '{rubric.registered_model}'",
        lambda: client.search_registered_models(filter_string=f"name = '{rubric.registered_model}'"),
        [],
    )
    if registered:
        facts.registered = True
        facts.model_description = _text(registered[0].description)
        _read_versions(client, uri, reader, registered[0], workdir.resolve(), rubric)
    return facts


def _text(value) -> str:
    return str(value or "")[:MAX_TEXT_CHARS]


def _read_runs(client, reader: _FactReader, experiment_id: str, inside: Path, rubric: Rubric) -> None:
    from mlflow.entities import LoggedModelStatus

    facts = reader.facts
    models = reader.read(
        "the experiment's logged models",
        lambda: _all_pages(lambda token: client.search_logged_models([experiment_id], page_token=token)),
        [],
    )
    ready, failed = {}, {}
    for model in sorted(models, key=lambda model: model.creation_timestamp or 0):
        if not _inside(model.artifact_location or "", inside):
            facts.outside.append(model.artifact_location)
        elif model.status == LoggedModelStatus.READY:
            ready.setdefault(model.source_run_id, []).append(model.model_id)
            facts.model_locations[model.model_id] = model.artifact_location
        else:
            failed[model.source_run_id] = failed.get(model.source_run_id, 0) + 1
    metric = rubric.rank_by if re.fullmatch(r"\w+", rubric.rank_by) else f"`{rubric.rank_by}`"
    order = [f"metrics.{metric} {'DESC' if rubric.rank_direction == 'max' else 'ASC'}"] if rubric.rank_by else None
    runs = reader.read(
        "the experiment's runs",
        lambda: _all_pages(lambda token: client.search_runs([experiment_id], order_by=order, page_token=token)),
        [],
    )
    facts.runs = [
        _run_facts(run, rubric, ready.get(run.info.run_id, []), failed.get(run.info.run_id, 0)) for run in runs
    ]
    if rubric.artifact_reads:
        roots = {run.run_id: found.info.artifact_uri or "" for run, found in zip(facts.runs, runs, strict=True)}
        shared = _shared_artifact_folders(roots, inside)
        budget = {"bytes": MAX_READ_BYTES, "entries": MAX_LISTED_ARTIFACTS}
        for run in facts.runs:
            if run.run_id in shared:
                run.artifact_problem = f"its artifact folder is also run {shared[run.run_id][:8]}'s, or inside it"
            else:
                _list_artifacts(run, roots[run.run_id], inside, rubric, budget)


def _read_versions(client, uri: str, reader: _FactReader, registered, inside: Path, rubric: Rubric) -> None:
    facts = reader.facts
    name = registered.name
    aliases = reader.read(f"the aliases of '{name}'", lambda: dict(client.get_registered_model(name).aliases), {})
    versions = reader.read(
        f"the versions of '{name}'",
        lambda: _all_pages(lambda token: client.search_model_versions(f"name = '{name}'", page_token=token)),
        [],
    )
    for version in sorted(versions, key=lambda version: int(version.version)):
        tags = {str(key)[:MAX_TEXT_CHARS]: _text(value) for key, value in list((version.tags or {}).items())[:100]}
        location = reader.read(
            f"where version {version.version}'s files are",
            lambda version=version: _download_location(client, uri, version),
        )
        if location and not _inside(location, inside):
            facts.outside.append(location)
        facts.versions.append(
            VersionFacts(
                version=str(version.version),
                run_id=version.run_id,
                stage=version.current_stage or "None",
                aliases=sorted(alias for alias, number in aliases.items() if str(number) == str(version.version)),
                location=location or "",
                tags=tags,
                description=_text(version.description),
            )
        )
    served = rubric.served
    if served is not None:
        production = reader.read(
            f"which version {served.uri} loads", lambda: _served_version(client, served, aliases), None
        )
        facts.production = next((version for version in facts.versions if version.version == production), None)
    rescored = (facts.version_at(selector) for selector in rubric.rescored)
    facts.rescored = [version for version in rescored if version is not None and version is not facts.production]


def _served_version(client, served, aliases: dict[str, str]) -> str | None:
    """The version ``served.uri`` resolves to, as MLflow resolves it: the alias's version, or the newest version
    in the stage; None if no version holds it."""
    if served.by == "alias":
        return str(aliases[served.name]) if served.name in aliases else None
    if served.by == "version":
        return served.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; the rubric may still use one
        latest = client.get_latest_versions(served.model, [served.name])
    return str(max(int(version.version) for version in latest)) if latest else None


def _download_location(client, store_uri: str, version) -> str:
    """Where ``load_model("models:/NAME/VERSION")`` reads the files: MLflow's download URI for the version (its
    storage location when set, else its source), followed through the logged-model and run URIs it names."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    uri = client.get_model_version_download_uri(version.name, version.version)
    for _ in range(MAX_REFERENCE_HOPS):
        if uri.startswith("models:/"):
            named = get_model_name_and_version(client, uri)
            uri = (
                client.get_logged_model(named[0]).artifact_location
                if len(named) == 1
                else client.get_model_version_download_uri(*named)
            )
        elif uri.startswith("runs:/"):
            uri = RunsArtifactRepository.get_underlying_uri(uri, tracking_uri=store_uri)
        else:
            return uri
    raise ValueError(f"version {version.version} names models:/ or runs:/ URIs more than {MAX_REFERENCE_HOPS} deep")


def _all_pages(search) -> list:
    items, token = [], None
    while True:
        page = search(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _run_facts(run, rubric: Rubric, model_ids: list[str], failed_models: int) -> RunFacts:
    data = run.data
    labels = rubric.param_or_tag  # what the feedback calls each run by: the first, e.g. its model_type
    model_type = (data.params.get(labels[0]) or data.tags.get(labels[0])) if labels else None
    missing = [name for name in labels if name not in data.params and name not in data.tags]
    missing += [name for name in rubric.required_metrics if name not in data.metrics]
    inputs = run.inputs.dataset_inputs if run.inputs and run.inputs.dataset_inputs else []
    return RunFacts(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        model_type=model_type,
        metrics={name: data.metrics[name] for name in rubric.metrics if name in data.metrics},
        missing=missing,
        model_ids=model_ids,
        failed_models=failed_models,
        inputs=[_dataset_input(entry) for entry in inputs[:MAX_DATASET_INPUTS]],
    )


def _dataset_input(entry) -> DatasetInputFacts:
    context = next((tag.value for tag in entry.tags or [] if tag.key == "mlflow.data.context"), "")
    return DatasetInputFacts(_text(entry.dataset.name), _text(entry.dataset.digest), _text(context))


def _shared_artifact_folders(roots: dict[str, str], inside: Path) -> dict[str, str]:
    """Runs whose artifact folder is another run's, inside it or holding it, with that other run: MLflow gives each
    run a folder of its own, so one file listed for several runs (artifact_uri edited) would count for each."""
    owners: dict[Path, list[str]] = {}
    for run_id, uri in roots.items():
        if _inside(uri, inside):
            owners.setdefault(_local_path(uri).resolve(), []).append(run_id)
    shared: dict[str, str] = {}
    for root, run_ids in owners.items():
        others = [owner for parent in root.parents for owner in owners.get(parent, [])]
        if len(run_ids) > 1 or others:
            group = run_ids + others
            for run_id in group:
                shared.setdefault(run_id, next(other for other in group if other != run_id))
    return shared


def _list_artifacts(run: RunFacts, artifact_uri: str, inside: Path, rubric: Rubric, budget: dict[str, int]) -> None:
    """The run's artifact files, as the grader finds them on disk: links are neither followed nor listed, and the
    content of a file is read (its head) only if a check tests it (at most MAX_READS_PER_GLOB files per glob, and
    MAX_READ_BYTES per submission). Listing is bounded in entries looked at, per run and per submission, and by the
    store read's deadline."""
    too_many = f"the submission's runs hold more than {MAX_LISTED_ARTIFACTS} artifacts in all"
    if budget["entries"] <= 0:
        run.artifact_problem = too_many
        return
    if not _inside(artifact_uri, inside):
        run.artifact_problem = f"its artifact folder is outside the submission's folder ({str(artifact_uri)[:200]})"
        return
    root = _local_path(artifact_uri)
    found: list[tuple[ArtifactFacts, Path]] = []  # each with where it is on disk
    pending = [(root, 0)]
    try:
        while pending and len(found) < MAX_ARTIFACT_ENTRIES:
            if time.monotonic() > _deadline["at"]:
                raise TimeoutError(f"reading it took longer than {STORE_SECONDS} s")
            folder, depth = pending.pop()
            if not folder.is_dir() or folder.is_symlink():
                continue
            with os.scandir(folder) as scan:
                entries = list(itertools.islice(scan, budget["entries"] + 1))
            if len(entries) > budget["entries"]:
                budget["entries"] = 0
                run.artifact_problem = too_many
                return
            budget["entries"] -= len(entries)
            for entry in sorted(entries, key=lambda entry: entry.name)[:MAX_ARTIFACT_ENTRIES]:
                if entry.is_dir(follow_symlinks=False) and depth < MAX_ARTIFACT_DEPTH:
                    pending.append((Path(entry.path), depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    path = _printable(Path(entry.path).relative_to(root).as_posix())
                    found.append((ArtifactFacts(path, entry.stat(follow_symlinks=False).st_size), Path(entry.path)))
    except TimeoutError:
        raise  # the whole read stops at its deadline (a TimeoutError is an OSError too)
    except OSError as error:
        run.artifact_problem = f"{type(error).__name__}: {error.strerror or error}"
        return
    for glob, read in rubric.artifact_reads:
        tested = [(artifact, where) for artifact, where in found if read and fnmatch.fnmatchcase(artifact.path, glob)]
        for artifact, where in tested[:MAX_READS_PER_GLOB]:
            if not artifact.head and budget["bytes"] > 0:
                artifact.head = _head(where)
                budget["bytes"] -= max(len(artifact.head), 1)
    run.artifacts = sorted((artifact for artifact, _ in found), key=lambda artifact: artifact.path)


def _printable(name: str) -> str:
    """A file name as text that can be shown and written: bytes that are not UTF-8 (which os.scandir hands over as
    lone surrogates, unwritable in a page) become \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _head(path: Path) -> bytes:
    """The first ARTIFACT_HEAD_BYTES of a regular file, never through a link (nor a fifo that would block)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    with os.fdopen(descriptor, "rb") as stream:
        return stream.read(ARTIFACT_HEAD_BYTES) if stat.S_ISREG(os.fstat(stream.fileno()).st_mode) else b""


def _inside(location: str, workdir: Path) -> bool:
    return urlparse(location).scheme in ("", "file") and _local_path(location).resolve().is_relative_to(workdir)


def _local_path(location: str) -> Path:
    """A plain path, or a file: URI (whose path is percent-encoded), as a path."""
    parsed = urlparse(location)
    return Path(unquote(parsed.path) if parsed.scheme == "file" else location)


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
