"""Every run's logged metric matches the grader's re-scoring of that run's model, and the served model's too.

A run may have logged several models (a baseline beside the one it registered): its metric is honest if it is
one of theirs. A mismatch raises the flag ``metrics_honest``; nothing re-scorable fails without claiming dishonesty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from grader.checks import Context, Outcome
from grader.checks.common import listed, run_label
from grader.checks.params import OfModel

FLAG = "metrics_honest"


@dataclass(frozen=True, kw_only=True)
class Params(OfModel):
    experiment: str
    metric: str
    measure: Literal["rmse", "r2"] = "rmse"
    tolerance: float | None = None


def check(params: Params, context: Context) -> Outcome:
    facts, say = context.facts, context.say
    compared = [(run_label(run), run, _closest(params, run, facts.run_scores(run))) for run in facts.runs]
    version = context.version(params.selector)
    served_run = next((run for run in facts.runs if version and run.run_id == version.run_id), None)
    if served_run is not None:
        served = say("metrics_honest.served", served=params.selector.short)
        compared.append((served, served_run, facts.version_score(version)))
    findings = [finding for label, run, score in compared if (finding := _compare(params, context, label, run, score))]
    if not findings:
        return Outcome(False, say("metrics_honest.nothing"))
    wrong = [message for agrees, message in findings if not agrees]
    if not wrong:
        return Outcome(True, say("metrics_honest.passed", metric=params.metric, count=len(findings)))
    message = say("metrics_honest.failed", wrong=len(wrong), count=len(findings), listed=listed(context, wrong))
    return Outcome(False, message, [FLAG])


def expectation(params: Params, context: Context) -> str:
    return context.say("metrics_honest.expected", metric=params.metric, tolerance=_tolerance(params, context))


def _tolerance(params: Params, context: Context) -> float:
    return params.tolerance if params.tolerance is not None else context.rubric.rmse_tolerance


def _closest(params: Params, run, scores):
    logged = run.metrics.get(params.metric)
    if logged is None or not scores:
        return None
    return min(scores, key=lambda score: abs(getattr(score, params.measure) - logged) if math.isfinite(logged) else 0)


def _compare(params: Params, context: Context, label: str, run, score):
    if run is None or params.metric not in run.metrics or score is None or not score.ok:
        return None
    logged, actual = run.metrics[params.metric], getattr(score, params.measure)
    agrees = abs(logged - actual) <= _tolerance(params, context)
    verdict = context.say("metrics_honest.matches" if agrees else "metrics_honest.does_not_match")
    compared = context.say("metrics_honest.logged", metric=params.metric, logged=logged, verdict=verdict, actual=actual)
    return agrees, f"{label}: {compared}"
