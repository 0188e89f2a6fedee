"""The best run by a logged metric is the served version's run, and the grader's own re-scoring agrees.

First the acceptance criterion as the student would run it (``search_runs`` ordered by the metric; a run tied with
the top one is the top one, since the order of a tie is arbitrary), then the same question asked of the grader's
numbers: no run's model may score better than the served files by more than the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from grader.checks import Context, Outcome
from grader.checks.common import run_label
from grader.checks.params import OfModel

ORDER = {"min": "ASC", "max": "DESC"}


@dataclass(frozen=True, kw_only=True)
class Params(OfModel):
    experiment: str
    metric: str
    direction: Literal["min", "max"] = "min"
    measure: Literal["rmse", "r2"] = "rmse"
    tolerance: float | None = None


def check(params: Params, context: Context) -> Outcome:
    facts, say, selector = context.facts, context.say, params.selector
    metric = params.metric
    best = facts.best
    if best is None or metric not in best.metrics:
        return Outcome(False, say("best_run_is_served.no_metric", metric=metric))
    found = say("best_run_is_served.found", metric=metric, run=run_label(best), value=best.metrics[metric])
    version = context.version(selector)
    if version is None:
        return Outcome(False, say("best_run_is_served.no_version", found=found, where=context.where(selector)))
    served_run = next((run for run in facts.runs if run.run_id == version.run_id), None)
    tied = served_run is not None and math.isclose(
        served_run.metrics.get(metric, math.nan), best.metrics[metric], rel_tol=0, abs_tol=1e-9
    )
    if served_run is not best and not tied:
        if served_run is None:
            where = say("best_run_is_served.not_a_run", run=str(version.run_id)[:32])
        else:
            where = run_label(served_run)
            if metric in served_run.metrics:
                where += f" with {metric}={served_run.metrics[metric]:.4f}"
        return Outcome(
            False,
            say(
                "best_run_is_served.other_run", found=found, version=version.version, served=selector.short, where=where
            ),
        )
    served = facts.version_score(version)
    if served is None or not served.ok:
        return Outcome(
            False, say("best_run_is_served.unscored", found=found, version=version.version, served=selector.short)
        )
    tolerance = params.tolerance if params.tolerance is not None else context.rubric.rmse_tolerance
    sign = 1 if params.measure == "rmse" else -1  # lower is better for rmse, higher for r2
    own = getattr(served, params.measure)
    better = min(
        ((sign * getattr(score, params.measure), run) for run in facts.runs for score in facts.run_scores(run)),
        key=lambda pair: pair[0],
        default=None,
    )
    if better and better[0] < sign * own - tolerance:
        logged = better[1].metrics.get(metric)
        logged_text = (
            f"{metric}={logged:.4f}" if logged is not None else say("best_run_is_served.no_logged", metric=metric)
        )
        return Outcome(
            False,
            say(
                "best_run_is_served.disagrees",
                found=found,
                served=selector.short,
                measure=params.measure,
                own=own,
                run=run_label(better[1]),
                better=sign * better[0],
                logged=logged_text,
            ),
        )
    return Outcome(
        True,
        say(
            "best_run_is_served.passed",
            found=found,
            version=version.version,
            served=selector.short,
            measure=params.measure,
            own=own,
        ),
    )


def expectation(params: Params, context: Context) -> str:
    return context.say(
        "best_run_is_served.expected",
        metric=params.metric,
        order=ORDER[params.direction],
        where=context.where(params.selector),
    )
