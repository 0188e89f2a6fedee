"""Every run has a logged model that the grader's probe loaded and that predicted the whole test split.

Several runs whose models predict exactly alike keep their points (each has a model) but raise the flag
``duplicate_models``: one model logged under many names is not many models.
"""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import LISTED_RUNS, clipped, listed, run_label, with_unread

FLAG = "duplicate_models"


@dataclass(frozen=True, kw_only=True)
class Params:
    experiment: str


def check(params: Params, context: Context) -> Outcome:
    facts = context.facts
    if not facts.runs:
        return Outcome(False, with_unread(context, context.say("common.no_runs"), "the experiment's runs"))
    duplicates = _identical_models(context)
    flags = [FLAG] if duplicates else []
    note = context.say("run_models.note", duplicates=duplicates) if duplicates else ""
    lacking = [run for run in facts.runs if facts.run_score(run) is None]
    if not lacking:
        return Outcome(True, context.say("run_models.passed", count=len(facts.runs)) + note, flags)
    each = [f"{run_label(run)}: {_why_no_model(context, run)}" for run in lacking]
    outside = context.say("run_models.outside", location=clipped(facts.outside[0], 300)) if facts.outside else ""
    message = context.say(
        "run_models.failed", lacking=len(lacking), count=len(facts.runs), listed=listed(context, each), outside=outside
    )
    return Outcome(False, with_unread(context, message, "the experiment's logged models") + note, flags)


def expectation(params: Params, context: Context) -> str:
    return context.say("run_models.expected")


def _identical_models(context: Context) -> str:
    """Runs whose models predict exactly the same numbers: one model logged several times, under other names."""
    facts = context.facts
    by_predictions: dict[tuple[float, ...], list] = {}
    for run in facts.runs:
        score = facts.run_score(run)
        if score is not None:
            by_predictions.setdefault(tuple(score.predictions), []).append(run)
    groups = [runs for runs in by_predictions.values() if len(runs) > 1]
    if not groups:
        return ""
    each = "; ".join(", ".join(run_label(run) for run in runs[:LISTED_RUNS]) for runs in groups[:3])
    return context.say("run_models.alike", count=sum(map(len, groups)), listed=each)


def _why_no_model(context: Context, run) -> str:
    facts, say = context.facts, context.say
    if not run.model_ids:
        return say("run_models.none_saved", failed=run.failed_models) if run.failed_models else say("run_models.none")
    if any(model_id in facts.unscored for model_id in run.model_ids):
        return say("run_models.too_many")
    errors = [
        facts.scores[label].error
        for model_id in run.model_ids
        if (label := facts.model_labels.get(model_id, model_id)) in facts.scores
    ]
    return say("run_models.did_not_load", error=errors[-1][:200]) if errors else say("run_models.not_scored")
