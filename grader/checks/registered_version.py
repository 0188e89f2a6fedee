"""The registered model exists and has a version in the given stage, or holding the given alias."""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import unread, versions_list, with_unread
from grader.checks.params import OfModel


@dataclass(frozen=True, kw_only=True)
class Params(OfModel):
    pass


def check(params: Params, context: Context) -> Outcome:
    facts, say, selector = context.facts, context.say, params.selector
    if not facts.registered:
        return Outcome(False, unread(context, "the registered model") or say("common.no_model", model=params.model))
    version = context.version(selector)
    versions = versions_list(facts)
    if version is None:
        message = say("registered_version.failed", model=params.model, where=context.where(selector), versions=versions)
        return Outcome(False, with_unread(context, message, "which version", "the versions"))
    is_where = say(f"is_where.{selector.by}", name=selector.name)
    return Outcome(
        True, say("registered_version.passed", version=version.version, is_where=is_where, versions=versions)
    )


def expectation(params: Params, context: Context) -> str:
    return context.say("registered_version.expected", model=params.model, where=context.where(params.selector))
