"""The registered model, or one of its versions, has a description of at least ``min_chars`` characters.

Limit: a description is the student's word: the check verifies it is there and not a placeholder of a few letters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import unread
from grader.checks.params import OfAnyVersion


@dataclass(frozen=True, kw_only=True)
class Params(OfAnyVersion):
    min_chars: int = 10

    SELECTOR_REQUIRED = False

    def problem(self) -> str | None:
        return None if self.min_chars > 0 else f"'min_chars' must be positive, not {self.min_chars!r}"


def check(params: Params, context: Context) -> Outcome:
    facts, say, selector = context.facts, context.say, params.selector
    if not facts.registered:
        return Outcome(False, unread(context, "the registered model") or say("common.no_model", model=params.model))
    if selector is None:
        text, subject = facts.model_description, say("description_present.of_model", model=params.model)
    else:
        version = context.version(selector)
        if version is None:
            return Outcome(False, say("common.no_version", where=context.where(selector)))
        text, subject = version.description, say("description_present.of_version", version=version.version)
    length = visible_chars(text)
    if length >= params.min_chars:
        return Outcome(True, say("description_present.passed", subject=subject, length=length))
    return Outcome(False, say("description_present.failed", subject=subject, length=length, min_chars=params.min_chars))


def visible_chars(text: str) -> int:
    """Characters that show: not spaces, nor format characters (zero-width spaces and joiners, U+FEFF...) that
    ``str.split`` keeps but no reader sees."""
    return sum(1 for char in text if not char.isspace() and unicodedata.category(char) not in ("Cf", "Cc", "Zs"))


def expectation(params: Params, context: Context) -> str:
    selector = params.selector
    subject = (
        context.say("description_present.of_model", model=params.model)
        if selector is None
        else context.say("description_present.of_selected", where=context.where(selector))
    )
    return context.say("description_present.expected", subject=subject, min_chars=params.min_chars)
