"""The selected version carries a tag whose whole value matches a pattern (e.g. a semantic version).

Limit: a tag is the student's word: the check verifies it is on the right version, in the right form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _constants, _parser  # the pattern's structure, to refuse shapes that backtrack

from grader.checks import Context, Outcome
from grader.checks.common import SHOWN_CHARS, clipped, unread
from grader.checks.params import OfAnyVersion

# Longer values fail without being matched: a pattern tests a short tag (a version, a verdict, a hash), and even
# a pattern without nested repetition can take polynomial time (`.*.*.*x`) on a value of MLflow's 5,000 chars.
MAX_VALUE_CHARS = 300
ANY_VALUE = ".+"  # the default pattern: linear on any value, so not bounded


@dataclass(frozen=True, kw_only=True)
class Params(OfAnyVersion):
    tag: str
    pattern: str = ANY_VALUE

    def problem(self) -> str | None:
        if not self.pattern:
            return "'pattern' must not be empty (leave it out to accept any non-empty value)"
        try:
            parsed = _parser.parse(self.pattern)
        except re.error as error:
            return f"'pattern' is not a regular expression ({error}): {self.pattern!r}"
        if _backtracks(parsed, repeated=False):
            return (
                f"'pattern' repeats a group that holds a repetition or an alternative ({self.pattern!r}): Python's "
                "re can take exponential time on a student's value; write it without one (e.g. "
                r"'v?\d+\.\d+\.\d+' rather than '(\d+\.?)+')"
            )
        return None


def _backtracks(parsed, repeated: bool) -> bool:
    r"""Whether a repetition (``*``, ``+``, ``{m,n}`` with n > 1) holds another repetition or an alternation: the
    shapes (``(a+)+``, ``(\w+\s?)+``, ``(a|ab)*``) on which a backtracking matcher takes exponential time."""
    for op, argument in parsed:
        if op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT):
            _, high, inner = argument
            many = high is _constants.MAXREPEAT or high > 1
            if (many and repeated) or _backtracks(inner, repeated or many):
                return True
        elif op is _constants.BRANCH:
            if repeated or any(_backtracks(branch, repeated) for branch in argument[1]):
                return True
        elif op in (_constants.SUBPATTERN, _constants.ASSERT, _constants.ASSERT_NOT) and _backtracks(
            argument[-1], repeated
        ):
            return True
    return False


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
    too_long = len(value) > MAX_VALUE_CHARS and params.pattern != ANY_VALUE
    if too_long or not re.fullmatch(params.pattern, value):
        return Outcome(
            False,
            say("version_tag.mismatch", version=version.version, tag=params.tag, value=shown, pattern=params.pattern),
        )
    return Outcome(True, say("version_tag.passed", version=version.version, tag=params.tag, value=shown))


def expectation(params: Params, context: Context) -> str:
    where = context.where(params.selector)
    return context.say("version_tag.expected", model=params.model, where=where, tag=params.tag, pattern=params.pattern)
