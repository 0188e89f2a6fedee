"""Runs logged a dataset input (``mlflow.log_input``) in a given context, with a digest.

Limit: a dataset input is metadata the student's code writes, and a digest is any string it chose: with
``digests`` the digest must be one of those MLflow computes for the canonical data (the instructor copies them
from the reference solution's store); the grader does not re-compute a digest from the data itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grader.checks import Context, Outcome
from grader.checks.common import SHOWN_CHARS, clipped, listed, run_label, runs_in_scope
from grader.checks.params import OfAnyVersion


@dataclass(frozen=True, kw_only=True)
class Params(OfAnyVersion):
    experiment: str
    context: str
    name: str | None = None
    require_digest: bool = True
    digests: tuple[str, ...] | None = None
    on: Literal["every_run", "any_run", "served_run"] = "every_run"
    model: str | None = None

    SELECTOR_REQUIRED = False

    def problem(self) -> str | None:
        return _scope_problem(self)


def _scope_problem(params) -> str | None:
    """``model`` and its selector are for ``on = "served_run"`` only, and needed there."""
    if params.on == "served_run" and (params.model is None or params.selector is None):
        return "with on = 'served_run' give 'model' and 'stage', 'alias' or 'version': the run is that version's"
    if params.on != "served_run" and (params.model is not None or params.selector is not None):
        return "'model', 'stage', 'alias' and 'version' are for on = 'served_run' only"
    return None


def check(params: Params, context: Context) -> Outcome:
    runs, why = runs_in_scope(context, params.on, params.selector)
    if not runs:
        return Outcome(False, why)
    good = [run for run in runs if _matching(params, run)]
    passed = bool(good) if params.on == "any_run" else len(good) == len(runs)
    if passed:
        found = _matching(params, good[0])
        return Outcome(
            True,
            context.say(
                "dataset_input.passed",
                count=len(good),
                total=len(runs),
                dataset=_label(found),
                digest=clipped(found.digest, SHOWN_CHARS),
            ),
        )
    lacking = [f"{run_label(run)}: {_found(context, run)}" for run in runs if run not in good]
    return Outcome(
        False,
        context.say("dataset_input.failed", lacking=len(lacking), total=len(runs), listed=listed(context, lacking)),
    )


def expectation(params: Params, context: Context) -> str:
    say = context.say
    where = context.where(params.selector) if params.selector else ""
    parts = [say(f"dataset_input.expected_{params.on}", where=where)]
    parts.append(
        say("dataset_input.expected_context", context=params.context)
        if params.context
        else say("dataset_input.expected_any_context")
    )
    if params.name:
        parts.append(say("dataset_input.expected_name", name=params.name))
    if params.digests:
        parts.append(say("dataset_input.expected_digests", digests=", ".join(params.digests)))
    elif params.require_digest:
        parts.append(say("dataset_input.expected_digest"))
    return " ".join(parts)


def _matching(params: Params, run):
    """The run's first dataset input that meets every condition, or None."""
    for entry in run.inputs:
        if params.context and entry.context != params.context:
            continue
        if params.name is not None and entry.name != params.name:
            continue
        if params.require_digest and not entry.digest.strip():
            continue
        if params.digests is not None and entry.digest not in params.digests:
            continue
        return entry
    return None


def _label(entry) -> str:
    return f"'{clipped(entry.name, SHOWN_CHARS)}' ({clipped(entry.context, SHOWN_CHARS) or '-'})"


def _found(context: Context, run) -> str:
    if not run.inputs:
        return context.say("dataset_input.none")
    shown = ", ".join(f"{_label(entry)} digest '{clipped(entry.digest, SHOWN_CHARS)}'" for entry in run.inputs[:3])
    return context.say("dataset_input.other", found=shown)
