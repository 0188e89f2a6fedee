"""The homework's grading rules, read from a TOML rubric and checked before anything is graded."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.sandbox import Limits

CHECK_IDS = (
    "experiment",
    "runs",
    "run_fields",
    "run_models",
    "registered",
    "best_is_production",
    "production_loads",
    "final_prediction",
    "metrics_honest",
)
DATASETS = {"california_housing": 20640}  # the data sets the probe can split, with their row counts


class RubricError(ValueError):
    """The rubric cannot be used; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Split:
    dataset: str
    test_size: float
    random_state: int
    prediction_rows: int


@dataclass(frozen=True)
class Rubric:
    path: Path
    homework: str
    experiment: str
    min_runs: int
    registered_model: str
    param_or_tag: tuple[str, ...]
    metrics: tuple[str, ...]
    rank_by: str
    production_by: str  # "stage" or "alias"
    production_stage: str
    production_alias: str
    split: Split
    rmse_tolerance: float
    prediction_tolerance: float
    points: dict[str, int]
    hints: dict[str, str]  # what to do when a check fails, for the student
    limits: Limits
    probe_seconds: int
    kept_bytes: int
    archive_bytes: int
    archive_members: int
    # Checked at intake, before anything is copied or parsed: a folder's files and folders, and its apparent
    # bytes (or a zip's own size); a notebook's bytes.
    submission_files: int
    submission_bytes: int
    notebook_bytes: int

    @property
    def max_score(self) -> int:
        return sum(self.points.values())

    @property
    def production_label(self) -> str:
        """How the notebook and the feedback name the Production version, e.g. stage 'Production'."""
        if self.production_by == "alias":
            return f"alias '{self.production_alias}'"
        return f"stage '{self.production_stage}'"

    @property
    def production_uri(self) -> str:
        if self.production_by == "alias":
            return f"models:/{self.registered_model}@{self.production_alias}"
        return f"models:/{self.registered_model}/{self.production_stage}"


class _Reader:
    """Typed access to the parsed TOML, so every error names the offending key."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    def fail(self, key: str, problem: str) -> RubricError:
        return RubricError(f"rubric {self.path}: '{key}' {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not None:
                    return default
                raise self.fail(key, "is missing")
            node = node[part]
        # bool is an int in Python; a rubric saying `min_runs = true` is a mistake, not 1.
        if isinstance(node, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, f"must be {_kind_name(kind)}, not {node!r}")
        if not isinstance(node, kind):
            raise self.fail(key, f"must be {_kind_name(kind)}, not {node!r}")
        return node

    def positive(self, key: str, kind: type | tuple[type, ...] = int, default: Any = None) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.fail(key, f"must be positive, not {value!r}")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list)
        if not value or not all(isinstance(item, str) and item for item in value):
            raise self.fail(key, f"must be a non-empty list of names, not {value!r}")
        return tuple(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {"str": "a string", "int": "an integer", "float": "a number", "list": "a list"}.get(k.__name__, k.__name__)
        for k in kinds
    )


def _hints(read: _Reader) -> dict[str, str]:
    hints = read.get("hints", dict, default={})
    unknown = sorted(set(hints) - set(CHECK_IDS))
    if unknown:
        raise read.fail("hints", f"names unknown checks {unknown}; the checks are {list(CHECK_IDS)}")
    return {check: read.get(f"hints.{check}", str) for check in hints}


def load(path: str | Path) -> Rubric:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RubricError(f"rubric {path}: cannot be read ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise RubricError(f"rubric {path}: not valid TOML ({error})") from error
    read = _Reader(path, data)

    points = read.get("points", dict)
    unknown = sorted(set(points) - set(CHECK_IDS))
    if unknown:
        raise read.fail("points", f"names unknown checks {unknown}; the checks are {list(CHECK_IDS)}")
    for check in CHECK_IDS:
        if read.get(f"points.{check}", int, default=0) < 0:
            raise read.fail(f"points.{check}", "must not be negative")

    production_by = read.get("production.by", str, default="stage")
    if production_by not in ("stage", "alias"):
        raise read.fail("production.by", f"must be 'stage' or 'alias', not {production_by!r}")
    dataset = read.get("data.dataset", str)
    if dataset not in DATASETS:
        raise read.fail("data.dataset", f"must be one of {list(DATASETS)}, not {dataset!r}")
    test_size = read.positive("data.test_size", float)
    if test_size >= 1:
        raise read.fail("data.test_size", f"must be a fraction below 1, not {test_size!r}")
    metrics = read.names("run_fields.metrics")
    rank_by = read.get("run_fields.rank_by", str)
    if rank_by not in metrics:
        raise read.fail("run_fields.rank_by", f"must be one of run_fields.metrics {list(metrics)}, not {rank_by!r}")

    wall_seconds = read.positive("limits.wall_seconds")
    return Rubric(
        path=path,
        homework=read.get("homework", str),
        experiment=read.get("experiment", str),
        min_runs=read.positive("min_runs"),
        registered_model=read.get("registered_model", str),
        param_or_tag=read.names("run_fields.param_or_tag"),
        metrics=metrics,
        rank_by=rank_by,
        production_by=production_by,
        production_stage=read.get("production.stage", str, default="Production"),
        production_alias=read.get("production.alias", str, default="champion"),
        split=Split(
            dataset=dataset,
            test_size=test_size,
            random_state=read.get("data.random_state", int),
            prediction_rows=read.positive("data.prediction_rows"),
        ),
        rmse_tolerance=read.positive("tolerance.rmse", (int, float)),
        prediction_tolerance=read.positive("tolerance.prediction", (int, float)),
        points={check: read.get(f"points.{check}", int, default=0) for check in CHECK_IDS},
        hints=_hints(read),
        limits=Limits(
            wall_seconds=wall_seconds,
            cell_seconds=min(read.positive("limits.cell_seconds"), wall_seconds),
            memory_mb=read.positive("limits.memory_mb"),
            max_processes=read.positive("limits.max_processes"),
            output_bytes=read.positive("limits.output_bytes"),
        ),
        probe_seconds=read.positive("limits.probe_seconds"),
        kept_bytes=read.positive("limits.kept_bytes"),
        archive_bytes=read.positive("limits.archive_bytes"),
        archive_members=read.positive("limits.archive_members"),
        submission_files=read.positive("limits.submission_files"),
        submission_bytes=read.positive("limits.submission_bytes"),
        notebook_bytes=read.positive("limits.notebook_bytes"),
    )
