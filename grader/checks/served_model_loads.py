"""The served version's files load in the probe and predict the whole canonical test split."""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import clipped, numbers, with_unread
from grader.checks.params import OfModel


@dataclass(frozen=True, kw_only=True)
class Params(OfModel):
    pass


def check(params: Params, context: Context) -> Outcome:
    facts, say, selector = context.facts, context.say, params.selector
    version = context.version(selector)
    if version is None:
        return Outcome(False, say("served_model_loads.no_version", where=context.where(selector)))
    if not version.location:
        message = say("served_model_loads.no_files", version=version.version)
        return Outcome(False, with_unread(context, message, "where version"))
    if version.location in facts.outside:
        return Outcome(False, say("served_model_loads.outside", location=clipped(version.location, 300)))
    served = facts.version_score(version)
    if served is None or not served.ok:
        error = served.error if served else say("common.not_scored")
        return Outcome(False, say("served_model_loads.failed", uri=selector.uri, error=error))
    return Outcome(
        True,
        say(
            "served_model_loads.passed",
            uri=selector.uri,
            rows=len(served.predictions),
            rmse=served.rmse,
            r2=served.r2,
            head=numbers(served.head),
        ),
    )


def expectation(params: Params, context: Context) -> str:
    split = context.rubric.split
    return context.say(
        "served_model_loads.expected",
        uri=params.selector.uri,
        test_size=split.test_size,
        random_state=split.random_state,
    )
