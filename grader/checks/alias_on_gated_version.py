"""An alias points at the newest version that passed a gate, the gate's verdict recorded as a tag on the version.

A challenger that passes moves the alias; one that fails leaves it where it was. So the alias's version must carry
``tag = value``, and no newer version may carry it too. A verdict tag set by hand passes that test; with
``threshold`` the grader re-scores the aliased version's files itself and its own numbers must meet the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grader.checks import Context, Outcome
from grader.checks.common import SHOWN_CHARS, clipped, unread, versions_list
from grader.checks.params import Selector


@dataclass(frozen=True, kw_only=True)
class Params:
    model: str
    alias: str
    tag: str
    value: str
    measure: Literal["rmse", "r2"] = "rmse"
    threshold: float | None = None

    @property
    def selector(self) -> Selector:
        return Selector(self.model, "alias", self.alias)

    def problem(self) -> str | None:
        return None if self.alias else "'alias' must not be empty"


def check(params: Params, context: Context) -> Outcome:
    facts, say, selector = context.facts, context.say, params.selector
    if not facts.registered:
        return Outcome(False, unread(context, "the registered model") or say("common.no_model", model=params.model))
    version = context.version(selector)
    if version is None:
        message = say("common.no_version", where=context.where(selector))
        return Outcome(False, f"{message}; {say('common.versions', versions=versions_list(facts))}")
    verdict = version.tags.get(params.tag)
    if verdict != params.value:
        shown = say("common.nothing") if verdict is None else f"'{clipped(verdict, SHOWN_CHARS)}'"
        return Outcome(
            False,
            say(
                "alias_on_gated_version.not_gated",
                alias=params.alias,
                version=version.version,
                tag=params.tag,
                value=params.value,
                found=shown,
            ),
        )
    newer = [
        each
        for each in facts.versions
        if int(each.version) > int(version.version) and each.tags.get(params.tag) == params.value
    ]
    if newer:
        return Outcome(
            False,
            say(
                "alias_on_gated_version.not_moved",
                alias=params.alias,
                version=version.version,
                newer=newer[-1].version,
                tag=params.tag,
                value=params.value,
            ),
        )
    found = say(
        "alias_on_gated_version.passed", alias=params.alias, version=version.version, tag=params.tag, value=params.value
    )
    if params.threshold is None:
        return Outcome(True, found)
    return _rescored(params, context, version, found)


def _rescored(params: Params, context: Context, version, found: str) -> Outcome:
    say = context.say
    score = context.facts.version_score(version)
    if score is None or not score.ok:
        why = score.error[:200] if score is not None and score.error else say("common.not_scored")
        return Outcome(False, say("alias_on_gated_version.unscored", found=found, error=why))
    value = getattr(score, params.measure)
    meets = value <= params.threshold if params.measure == "rmse" else value >= params.threshold
    key = "alias_on_gated_version.meets" if meets else "alias_on_gated_version.misses"
    return Outcome(meets, say(key, found=found, measure=params.measure, value=value, threshold=params.threshold))


def expectation(params: Params, context: Context) -> str:
    text = context.say(
        "alias_on_gated_version.expected", model=params.model, alias=params.alias, tag=params.tag, value=params.value
    )
    if params.threshold is None:
        return text
    bound = "≤" if params.measure == "rmse" else "≥"
    return text + context.say(
        "alias_on_gated_version.expected_threshold", measure=params.measure, bound=bound, threshold=params.threshold
    )
