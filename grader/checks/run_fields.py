"""Every run of the experiment has the named params (or tags) and metrics."""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import listed, names, run_label, with_unread


@dataclass(frozen=True, kw_only=True)
class Params:
    experiment: str
    params_or_tags: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()

    def problem(self) -> str | None:
        return None if self.params_or_tags or self.metrics else "names no field: give 'params_or_tags' or 'metrics'"


def check(params: Params, context: Context) -> Outcome:
    runs = context.facts.runs
    if not runs:
        return Outcome(False, with_unread(context, context.say("common.no_runs"), "the experiment's runs"))
    wanted = {*params.params_or_tags, *params.metrics}
    lacking = [(run, missing) for run in runs if (missing := [name for name in run.missing if name in wanted])]
    if not lacking:
        return Outcome(True, context.say("run_fields.passed", count=len(runs)))
    each = [
        context.say("run_fields.run_lacks", run=run_label(run), fields=names(context, missing))
        for run, missing in lacking
    ]
    return Outcome(
        False, context.say("run_fields.failed", lacking=len(lacking), count=len(runs), listed=listed(context, each))
    )


def expectation(params: Params, context: Context) -> str:
    fields = names(context, params.params_or_tags)
    metrics = names(context, params.metrics)
    if params.params_or_tags and params.metrics:
        return context.say("run_fields.expected", fields=fields, metrics=metrics)
    if params.metrics:
        return context.say("run_fields.expected_metrics", metrics=metrics)
    return context.say("run_fields.expected_fields", fields=fields)
