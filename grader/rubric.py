"""A homework's grading rules, read from a TOML rubric and checked before anything is graded.

The rubric lists its checks (``[[checks]]``), each of a kind from ``grader/checks/`` with its own parameters; the
top level holds what is not a check: the canonical split, tolerances, limits, the feedback's language. The
format and every kind are documented in ``grader/checks/README.md``.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import checks
from grader.checks.params import ParameterError, Selector, describe, parse
from grader.i18n import DEFAULT_LANGUAGE, LANGUAGES
from grader.sandbox import Limits

DATASETS = {"california_housing": 20640}  # the data sets the probe can split, with their row counts
CHECK_ID = re.compile(r"[a-z0-9_]{1,64}")
CHECK_KEYS = ("id", "kind", "points", "hint", *(f"hint_{language}" for language in LANGUAGES if language != "en"))
DEFAULT_PREDICTION_ROWS = 5


class RubricError(ValueError):
    """The rubric cannot be used; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Split:
    dataset: str
    test_size: float
    random_state: int
    prediction_rows: int  # how many first predictions of the test split the probe reports as a model's head


@dataclass(frozen=True)
class CheckSpec:
    """One ``[[checks]]`` entry: its id (the gradebook column), kind, points, hints and parsed parameters."""

    id: str
    kind: str
    points: int
    hints: dict[str, str]  # language -> what to do when the check fails
    params: Any

    def hint(self, language: str) -> str:
        return self.hints.get(language) or self.hints.get(DEFAULT_LANGUAGE, "")


@dataclass(frozen=True)
class Rubric:
    path: Path
    homework: str
    language: str | None  # the feedback's default language; `--lang` overrides it
    checks: tuple[CheckSpec, ...]
    split: Split
    rmse_tolerance: float
    prediction_tolerance: float
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

    # What the rest of the grader derives from the checks: the one experiment and registered model they read,
    # the served version, the ranking metric, the fields inspect keeps of each run.

    @property
    def check_ids(self) -> tuple[str, ...]:
        return tuple(check.id for check in self.checks)

    @property
    def points(self) -> dict[str, int]:
        return {check.id: check.points for check in self.checks}

    @property
    def max_score(self) -> int:
        return sum(check.points for check in self.checks)

    @property
    def experiment(self) -> str | None:
        return next(iter(_values(self.checks, "experiment")), None)

    @property
    def registered_model(self) -> str | None:
        return next(iter(_values(self.checks, "model")), None)

    @property
    def served(self) -> Selector | None:
        """The version the probe re-scores for the checks of SERVED_KINDS."""
        return next((check.params.selector for check in self.checks if check.kind in checks.SERVED_KINDS), None)

    @property
    def rescored(self) -> tuple[Selector, ...]:
        """Versions besides the served one whose files the probe must re-score (gates the grader verifies)."""
        return tuple(
            check.params.selector
            for check in self.checks
            if check.kind == "alias_on_gated_version" and check.params.threshold is not None
        )

    @property
    def production_label(self) -> str:
        """How the feedback names the served version, e.g. stage 'Production'."""
        return self.served.label if self.served else ""

    @property
    def production_uri(self) -> str:
        return self.served.uri if self.served else ""

    @property
    def rank_by(self) -> str:
        """The metric that ranks runs (the best_run_is_served check's), else the first one a check names."""
        ranked = self._ranking()
        return ranked.metric if ranked else next(iter(self.metrics), "")

    @property
    def rank_direction(self) -> str:
        ranked = self._ranking()
        return ranked.direction if ranked else "min"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the checks name: what inspect keeps of each run."""
        named = _values(self.checks, "metrics") + _values(self.checks, "metric")
        return tuple(dict.fromkeys(name for value in named for name in _listed(value)))

    @property
    def required_metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for value in _values(self.checks, "metrics") for name in value))

    @property
    def param_or_tag(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for value in _values(self.checks, "params_or_tags") for name in value))

    @property
    def min_runs(self) -> int:
        return next(iter(_values(self.checks, "min_runs")), 0)

    @property
    def artifact_reads(self) -> tuple[tuple[str, bool], ...]:
        """(glob, whether its content is read) of the artifact checks: what inspect lists and reads of each run."""
        return tuple(
            (check.params.path, check.params.contains is not None)
            for check in self.checks
            if check.kind == "artifact_present"
        )

    def _ranking(self):
        return next((check.params for check in self.checks if check.kind == "best_run_is_served"), None)


def _values(specs, name: str) -> list:
    return [getattr(spec.params, name) for spec in specs if getattr(spec.params, name, None) is not None]


def _listed(value) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else (value,)


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
        # bool is an int in Python; a rubric saying `wall_seconds = true` is a mistake, not 1.
        if isinstance(node, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, f"must be {_kind_name(kind)}, not {node!r}")
        if not isinstance(node, kind):
            raise self.fail(key, f"must be {_kind_name(kind)}, not {node!r}")
        return node

    def positive(self, key: str, kind: type | tuple[type, ...] = int, default: Any = None) -> Any:
        value = self.get(key, kind, default)
        if not 0 < value < math.inf:  # TOML has nan and inf: a tolerance of inf would accept any number
            raise self.fail(key, f"must be positive and finite, not {value!r}")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {"str": "a string", "int": "an integer", "float": "a number", "list": "a list"}.get(k.__name__, k.__name__)
        for k in kinds
    )


def _check_spec(read: _Reader, index: int, table: Any, language: str | None) -> CheckSpec:
    where = f"checks[{index}]"
    if not isinstance(table, dict):
        raise read.fail(where, f"must be a table ([[checks]]), not {table!r}")
    check_id = table.get("id")
    if not isinstance(check_id, str) or not CHECK_ID.fullmatch(check_id):
        raise read.fail(f"{where}.id", f"must be a name of 1 to 64 characters among a-z, 0-9 and _, not {check_id!r}")

    def fail(problem: str) -> RubricError:
        return RubricError(f"rubric {read.path}: check '{check_id}': {problem}")

    kind = table.get("kind")
    try:
        module = checks.kind(kind) if isinstance(kind, str) else None
    except KeyError:
        module = None
    if module is None:
        raise fail(f"unknown kind {kind!r}; the kinds are {', '.join(checks.KIND_NAMES)}")
    points = table.get("points")
    if isinstance(points, bool) or not isinstance(points, int):
        raise fail(f"'points' must be an integer, not {points!r}")
    if points < 0:
        raise fail(f"'points' must not be negative, not {points}")
    hints = {}
    for key in CHECK_KEYS[3:]:
        if key in table:
            if not isinstance(table[key], str):
                raise fail(f"'{key}' must be a string, not {table[key]!r}")
            hints["en" if key == "hint" else key.removeprefix("hint_")] = table[key]
    if language and language not in hints:
        wanted = "hint" if language == "en" else f"hint_{language}"
        raise fail(f"'{wanted}' is missing: the rubric's language is {language!r}")
    own = {key: value for key, value in table.items() if key not in CHECK_KEYS}
    try:
        params = parse(module.Params, own)
    except ParameterError as error:
        raise fail(f"({kind}) {error}") from error
    except TypeError as error:  # a dataclass refusing its arguments: a bug of the kind, said plainly
        raise fail(f"({kind}) {error}; its parameters are: {describe(module.Params)}") from error
    return CheckSpec(check_id, kind, points, hints, params)


def _consistent(read: _Reader, specs: tuple[CheckSpec, ...]) -> None:
    """One experiment, one registered model, one served version, one ranking per rubric (see README.md)."""
    for name, what in (("experiment", "experiment"), ("model", "registered model")):
        named = {spec.id: getattr(spec.params, name) for spec in specs if getattr(spec.params, name, None)}
        if len(set(named.values())) > 1:
            raise read.fail(
                "checks", f"name several {what}s ({_pairs(named)}): a rubric grades one {what}, every check names it"
            )
    served = {spec.id: spec.params.selector for spec in specs if spec.kind in checks.SERVED_KINDS}
    if len(set(served.values())) > 1:
        shown = {check_id: selector.label for check_id, selector in served.items()}
        raise read.fail("checks", f"select several served versions ({_pairs(shown)}): the re-scored checks share one")
    ranked = {
        spec.id: (spec.params.metric, spec.params.direction) for spec in specs if spec.kind == "best_run_is_served"
    }
    if len(set(ranked.values())) > 1:
        raise read.fail("checks", f"rank runs in several ways ({_pairs(ranked)}): runs are ranked one way")


def _pairs(named: dict) -> str:
    return ", ".join(f"{check_id}: {value}" for check_id, value in named.items())


def load(path: str | Path) -> Rubric:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RubricError(f"rubric {path}: cannot be read ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise RubricError(f"rubric {path}: not valid TOML ({error})") from error
    read = _Reader(path, data)

    language = data.get("language")
    if language is not None and language not in LANGUAGES:
        raise read.fail("language", f"must be one of {list(LANGUAGES)}, not {language!r}")
    tables = read.get("checks", list)
    if not tables:
        raise read.fail("checks", "must list at least one check ([[checks]] tables)")
    specs = tuple(_check_spec(read, index, table, language) for index, table in enumerate(tables))
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise read.fail("checks", f"has the id '{spec.id}' twice: each check's id is its own gradebook column")
        seen.add(spec.id)
    _consistent(read, specs)
    if "max_score" in data and read.get("max_score", int) != sum(spec.points for spec in specs):
        total = sum(spec.points for spec in specs)
        raise read.fail("max_score", f"is {data['max_score']}, but the checks' points add up to {total}")
    unknown = sorted(set(data) - {"homework", "language", "max_score", "data", "tolerance", "limits", "checks"})
    if unknown:
        raise read.fail(
            unknown[0],
            "is not a rubric key: the top level holds homework, language, max_score, "
            "[data], [tolerance], [limits] and the [[checks]]",
        )

    dataset = read.get("data.dataset", str)
    if dataset not in DATASETS:
        raise read.fail("data.dataset", f"must be one of {list(DATASETS)}, not {dataset!r}")
    test_size = read.positive("data.test_size", float)
    if test_size >= 1:
        raise read.fail("data.test_size", f"must be a fraction below 1, not {test_size!r}")
    rows = [spec.params.rows for spec in specs if spec.kind == "final_cell_predicts"]

    wall_seconds = read.positive("limits.wall_seconds")
    return Rubric(
        path=path,
        homework=read.get("homework", str),
        language=language,
        checks=specs,
        split=Split(
            dataset=dataset,
            test_size=test_size,
            random_state=read.get("data.random_state", int),
            prediction_rows=max(rows, default=DEFAULT_PREDICTION_ROWS),
        ),
        rmse_tolerance=read.positive("tolerance.rmse", (int, float)),
        prediction_tolerance=read.positive("tolerance.prediction", (int, float)),
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
