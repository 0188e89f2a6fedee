"""The selected version carries a tag whose whole value matches a pattern (e.g. a semantic version).

Limit: a tag is the student's word: the check verifies it is on the right version, in the right form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import SHOWN_CHARS, clipped, unread
from grader.checks.params import OfAnyVersion

MAX_VALUE_CHARS = 5000  # MLflow's own limit on a tag's value; a store edited behind its back may hold more


@dataclass(frozen=True, kw_only=True)
class Params(OfAnyVersion):
    tag: str
    pattern: str = ".+"

    def problem(self) -> str | None:
        try:
            re.compile(self.pattern)
        except re.error as error:
            return f"'pattern' is not a regular expression ({error}): {self.pattern!r}"
        return None


def check(params: Params, context: Context) -> Outcome:
    facts, say, selector = context.facts, context.say, params.selector
    if not facts.registered:
        return Outcome(False, unread(context, "the registered model") or say("common.no_model", model=params.model))
    version = context.version(selector)
    if version is None:
        return Outcome(False, say("common.no_version", where=context.where(selector)))
    if params.tag not in version.tags:
        tags = ", ".join(f"'{clipped(tag, SHOWN_CHARS)}'" for tag in sorted(version.tags)[:10]) or say("common.nothing")
        return Outcome(False, say("version_tag.missing", version=version.version, tag=params.tag, tags=tags))
    value = version.tags[params.tag]
    shown = clipped(value, SHOWN_CHARS)
    if len(value) > MAX_VALUE_CHARS or not re.fullmatch(params.pattern, value):
        return Outcome(
            False,
            say("version_tag.mismatch", version=version.version, tag=params.tag, value=shown, pattern=params.pattern),
        )
    return Outcome(True, say("version_tag.passed", version=version.version, tag=params.tag, value=shown))


def expectation(params: Params, context: Context) -> str:
    where = context.where(params.selector)
    return context.say("version_tag.expected", model=params.model, where=where, tag=params.tag, pattern=params.pattern)
