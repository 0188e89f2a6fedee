"""Run the rubric's checks on the facts found in a submission, each with points, a message and a hint.

Every check that can be verified is decided on the grader's own numbers: each run's model as the probe loaded and
re-scored it, and the served version's files exactly as ``models:/NAME/STAGE`` (or ``@ALIAS``) resolves them. The
kinds of check live in ``grader/checks/``, one module each; this is the loop that runs them.
"""

from __future__ import annotations

import nbformat

from grader import checks
from grader.checks.common import clipped
from grader.i18n import checked_language
from grader.inspect import Inspection
from grader.result import Check
from grader.rubric import Rubric


def language_of(rubric: Rubric, language: str | None = None) -> str:
    """The run's language: the command line's, else the rubric's, else English."""
    return checked_language(language or rubric.language)


def expectations(rubric: Rubric, language: str | None = None) -> dict[str, str]:
    """What passes each check, in the student's terms."""
    context = _context(Inspection(), None, rubric, language)
    return {spec.id: checks.kind(spec.kind).expectation(spec.params, context) for spec in rubric.checks}


def not_executed(rubric: Rubric, reason: str, language: str | None = None) -> list[Check]:
    language = language_of(rubric, language)
    expected = expectations(rubric, language)
    message = checks.catalogue(language)("common.not_checked", reason=reason)
    return [
        Check(spec.id, False, 0, spec.points, message, expected[spec.id], spec.hint(language)) for spec in rubric.checks
    ]


def score(
    facts: Inspection, notebook: nbformat.NotebookNode, rubric: Rubric, language: str | None = None
) -> tuple[list[Check], list[str]]:
    """The checks, and the flags their kinds raised (``metrics_honest``, ``duplicate_models``…), in rubric order."""
    language = language_of(rubric, language)
    context = _context(facts, notebook, rubric, language)
    results, flags = [], []
    for spec in rubric.checks:
        kind = checks.kind(spec.kind)
        outcome = kind.check(spec.params, context)
        flags += [flag for flag in outcome.flags if flag not in flags]
        results.append(
            Check(
                spec.id,
                outcome.passed,
                spec.points if outcome.passed else 0,
                spec.points,
                clipped(outcome.message),
                kind.expectation(spec.params, context),
                spec.hint(language),
            )
        )
    return results, flags


def _context(facts: Inspection, notebook, rubric: Rubric, language: str | None) -> checks.Context:
    return checks.Context(facts, notebook, rubric, checks.catalogue(language_of(rubric, language)))
