"""The store has an experiment of the given name."""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import unread


@dataclass(frozen=True, kw_only=True)
class Params:
    experiment: str


def check(params: Params, context: Context) -> Outcome:
    facts = context.facts
    if facts.experiment_found:
        return Outcome(True, context.say("experiment_exists.passed", experiment=params.experiment))
    failed = context.say("experiment_exists.failed", experiment=params.experiment)
    return Outcome(False, facts.problem or unread(context, "the experiments") or failed)


def expectation(params: Params, context: Context) -> str:
    return context.say("experiment_exists.expected", experiment=params.experiment)
