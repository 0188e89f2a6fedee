"""Check parameters: typed dataclasses read from a rubric's ``[[checks]]`` table, every mistake a clear message."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

STAGES = ("Staging", "Production", "Archived")  # the stages MLflow's registry knows
SELECTOR_FIELDS = ("stage", "alias", "version")
RUN_SCOPES = ("every_run", "any_run", "served_run")
MEASURES = ("rmse", "r2")  # what the grader computes itself on the canonical split
MEASURE_DIRECTION = {"rmse": "min", "r2": "max"}
# Names a check cannot do without: empty, the check could never pass (or would test nothing).
NON_BLANK = ("experiment", "model", "tag", "value", "metric", "path")
NON_NEGATIVE = ("tolerance",)  # a negative tolerance fails every honest number


class ParameterError(ValueError):
    """One parameter is wrong; the rubric loader adds the file and the check."""


@dataclass(frozen=True)
class Selector:
    """Which version of a registered model a check looks at: ``stage``, ``alias`` or ``version``."""

    model: str
    by: str  # "stage", "alias" or "version"
    name: str

    @property
    def key(self) -> str:
        return f"{self.by}:{self.name}"

    @property
    def uri(self) -> str:
        return f"models:/{self.model}@{self.name}" if self.by == "alias" else f"models:/{self.model}/{self.name}"

    @property
    def label(self) -> str:
        """In English, as the feedback page names it (e.g. "stage 'Production'")."""
        return f"version {self.name}" if self.by == "version" else f"{self.by} '{self.name}'"

    @property
    def short(self) -> str:
        """What the messages call the model it serves: "Production", "@champion", "version 3"."""
        return {"stage": self.name, "alias": f"@{self.name}", "version": f"v{self.name}"}[self.by]


@dataclass(frozen=True, kw_only=True)
class OfModel:
    """A registered model and one of its versions."""

    model: str
    stage: str | None = None
    alias: str | None = None

    SELECTORS: typing.ClassVar[tuple[str, ...]] = ("stage", "alias")
    SELECTOR_REQUIRED: typing.ClassVar[bool] = True

    @property
    def selector(self) -> Selector | None:
        for by in SELECTOR_FIELDS:
            value = getattr(self, by, None)
            if value is not None:
                return Selector(self.model, by, str(value))
        return None


@dataclass(frozen=True, kw_only=True)
class OfAnyVersion(OfModel):
    version: int | None = None

    SELECTORS: typing.ClassVar[tuple[str, ...]] = ("stage", "alias", "version")


def parse(params_class: type, table: dict[str, Any]) -> Any:
    """``params_class`` from the check's table (its own keys only); raises ParameterError naming the key."""
    fields = {field.name: field for field in dataclasses.fields(params_class)}
    hints = typing.get_type_hints(params_class)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ParameterError(f"unknown parameter {_quoted(unknown)}; {_takes(params_class)}")
    values = {}
    for name, field in fields.items():
        if name not in table:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ParameterError(f"'{name}' is missing; {_takes(params_class)}")
            continue
        try:
            values[name] = _typed(name, table[name], hints[name])
        except ParameterError as error:
            raise ParameterError(f"{error}; {_takes(params_class)}") from error
    params = params_class(**values)
    for name in NON_BLANK:
        if isinstance(getattr(params, name, None), str) and not getattr(params, name).strip():
            raise ParameterError(f"'{name}' must not be empty")
    for name in NON_NEGATIVE:
        if (getattr(params, name, None) or 0) < 0:
            raise ParameterError(f"'{name}' must not be negative, not {getattr(params, name)!r}")
    if isinstance(params, OfModel):
        _check_selector(params, table)
    problem = params.problem() if hasattr(params, "problem") else None
    if problem:
        raise ParameterError(problem)
    return params


def describe(params_class: type) -> str:
    """The parameters a kind takes, with their types, for error messages and the catalogue."""
    hints = typing.get_type_hints(params_class)
    parts = []
    for field in dataclasses.fields(params_class):
        optional = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        parts.append(f"{field.name} ({_type_name(hints[field.name])}{', optional' if optional else ''})")
    return ", ".join(parts)


def _takes(params_class: type) -> str:
    return f"its parameters are: {describe(params_class)}"


def _check_selector(params: OfModel, table: dict[str, Any]) -> None:
    given = [by for by in SELECTOR_FIELDS if by in table]
    allowed = " or ".join(f"'{by}'" for by in params.SELECTORS)
    if len(given) > 1:
        raise ParameterError(f"gives {_quoted(given)}: it selects one version, by {allowed}")
    if not given and params.SELECTOR_REQUIRED:
        raise ParameterError(f"selects no version: give {allowed}")
    version = getattr(params, "version", None)
    if version is not None and version < 1:
        raise ParameterError(f"'version' must be a version number (1 or more), not {version!r}")
    if params.stage is not None and params.stage not in STAGES:
        raise ParameterError(f"'stage' must be one of {list(STAGES)}, not {params.stage!r}")
    for by in ("alias", "stage"):
        if getattr(params, by) == "":
            raise ParameterError(f"'{by}' must not be empty")


def _typed(name: str, value: Any, hint: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    options = tuple(option for option in options if option is not type(None))
    for option in options:
        converted = _as(value, option)
        if converted is not _NO:
            return converted
    raise ParameterError(f"'{name}' must be {_type_name(hint)}, not {value!r}")


_NO = object()


def _as(value: Any, kind: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        return value if isinstance(value, str) and value in typing.get_args(kind) else _NO
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]: a non-empty list of non-blank names
        ok = isinstance(value, list) and value and all(isinstance(item, str) and item.strip() for item in value)
        return tuple(value) if ok else _NO
    if isinstance(value, bool):  # bool is an int in Python; `count = true` is a mistake, not 1
        return value if kind is bool else _NO
    if kind is float:  # TOML has inf and nan: a tolerance of inf passes anything, a threshold of nan nothing
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else _NO
    return value if isinstance(value, kind) else _NO


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint) if option is not type(None))
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list of names"
    return {str: "a string", int: "an integer", float: "a finite number", bool: "true or false"}.get(hint, str(hint))


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)
