"""The experiment has at least ``min_runs`` runs (and at most ``max_runs``, when given)."""

from __future__ import annotations

from dataclasses import dataclass

from grader.checks import Context, Outcome
from grader.checks.common import with_unread


@dataclass(frozen=True, kw_only=True)
class Params:
    experiment: str
    min_runs: int
    max_runs: int | None = None

    def problem(self) -> str | None:
        if self.min_runs <= 0:
            return f"'min_runs' must be positive, not {self.min_runs!r}"
        if self.max_runs is not None and self.max_runs < self.min_runs:
            return f"'max_runs' must be at least 'min_runs' ({self.min_runs}), not {self.max_runs!r}"
        return None


def check(params: Params, context: Context) -> Outcome:
    count = len(context.facts.runs)
    passed = count >= params.min_runs and (params.max_runs is None or count <= params.max_runs)
    message = context.say(_key(params, "found"), count=count, min_runs=params.min_runs, max_runs=params.max_runs)
    return Outcome(passed, with_unread(context, message, "the experiment's runs"))


def expectation(params: Params, context: Context) -> str:
    return context.say(_key(params, "expected"), min_runs=params.min_runs, max_runs=params.max_runs)


def _key(params: Params, what: str) -> str:
    if params.max_runs is None:
        return f"run_count.{what}"
    return f"run_count.{what}" + ("_exactly" if params.max_runs == params.min_runs else "_between")
