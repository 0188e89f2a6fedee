"""Runs have an artifact file matching a glob, not empty, and holding a given text when asked.

The files are listed by the grader itself from the run's artifact folder inside the submission's folder, never
through a link, with their real sizes: an empty placeholder fails ``min_bytes`` and a placeholder of the right
size fails ``contains``. Limit: the content beyond ``contains`` is not judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from grader.checks import Context, Outcome
from grader.checks.common import SHOWN_CHARS, clipped, listed, run_label, runs_in_scope
from grader.checks.dataset_input import _scope_problem
from grader.checks.params import OfAnyVersion


@dataclass(frozen=True, kw_only=True)
class Params(OfAnyVersion):
    experiment: str
    path: str
    on: Literal["every_run", "any_run", "served_run"] = "every_run"
    min_bytes: int = 1
    contains: str | None = None
    model: str | None = None

    SELECTOR_REQUIRED = False

    def problem(self) -> str | None:
        if not self.path.strip():
            return "'path' must not be empty"
        if self.path.startswith("/") or ".." in self.path.split("/"):
            return f"'path' is a glob inside the run's artifact folder (e.g. 'drift/*.html'), not {self.path!r}"
        if self.min_bytes < 0:
            return f"'min_bytes' must not be negative, not {self.min_bytes!r}"
        if self.contains == "":
            return "'contains' must not be empty"
        return _scope_problem(self)


def check(params: Params, context: Context) -> Outcome:
    runs, why = runs_in_scope(context, params.on, params.selector)
    if not runs:
        return Outcome(False, why)
    verdicts = {run.run_id: _verdict(params, context, run) for run in runs}
    good = [run for run in runs if verdicts[run.run_id] is None]
    passed = bool(good) if params.on == "any_run" else len(good) == len(runs)
    if passed:
        return Outcome(True, context.say("artifact_present.passed", count=len(good), total=len(runs), path=params.path))
    lacking = [f"{run_label(run)}: {verdicts[run.run_id]}" for run in runs if run not in good]
    return Outcome(
        False,
        context.say(
            "artifact_present.failed",
            lacking=len(lacking),
            total=len(runs),
            path=params.path,
            listed=listed(context, lacking),
        ),
    )


def expectation(params: Params, context: Context) -> str:
    say = context.say
    where = context.where(params.selector) if params.selector else ""
    text = say(f"artifact_present.expected_{params.on}", path=params.path, min_bytes=params.min_bytes, where=where)
    return text + (say("artifact_present.expected_contains", contains=params.contains) if params.contains else "")


def _verdict(params: Params, context: Context, run) -> str | None:
    """None when the run has a fitting file, else what it has instead."""
    say = context.say
    if run.artifacts is None:
        return say("artifact_present.unlisted", why=clipped(run.artifact_problem, 300))
    matching = [item for item in run.artifacts if fnmatchcase(item.path, params.path)]
    if not matching:
        found = ", ".join(f"'{clipped(item.path, SHOWN_CHARS)}'" for item in run.artifacts[:5]) or say("common.nothing")
        return say("artifact_present.missing", found=found)
    big = [item for item in matching if item.size >= params.min_bytes]
    if not big:
        return say("artifact_present.too_small", path=clipped(matching[0].path, SHOWN_CHARS), size=matching[0].size)
    if params.contains and not any(params.contains.encode() in item.head for item in big):
        return say("artifact_present.lacks_text", path=clipped(big[0].path, SHOWN_CHARS), contains=params.contains)
    return None
