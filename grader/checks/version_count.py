"""The registered model has at least ``min_versions`` versions (and at most ``max_versions``, when given)."""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import unread, versions_list, with_unread


@dataclass(frozen=True, kw_only=True)
class Params:
    model: str
    min_versions: int
    max_versions: int | None = None

    def problem(self) -> str | None:
        if self.min_versions <= 0:
            return f"'min_versions' must be positive, not {self.min_versions!r}"
        if self.max_versions is not None and self.max_versions < self.min_versions:
            return f"'max_versions' must be at least 'min_versions' ({self.min_versions}), not {self.max_versions!r}"
        return None


def check(params: Params, context: Context) -> Outcome:
    facts, say = context.facts, context.say
    if not facts.registered:
        return Outcome(False, unread(context, "the registered model") or say("common.no_model", model=params.model))
    count = len(facts.versions)
    passed = count >= params.min_versions and (params.max_versions is None or count <= params.max_versions)
    message = say(
        _key(params, "found"),
        model=params.model,
        count=count,
        min_versions=params.min_versions,
        max_versions=params.max_versions,
        versions=versions_list(facts) or say("common.nothing"),
    )
    return Outcome(passed, with_unread(context, message, "the versions"))


def expectation(params: Params, context: Context) -> str:
    return context.say(
        _key(params, "expected"), model=params.model, min_versions=params.min_versions, max_versions=params.max_versions
    )


def _key(params: Params, what: str) -> str:
    if params.max_versions is None:
        return f"version_count.{what}"
    return f"version_count.{what}" + ("_exactly" if params.max_versions == params.min_versions else "_between")
