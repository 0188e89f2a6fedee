"""What several kinds say the same way: a run's label, a list of names, the facts the store read could not tell."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.checks import Context
    from grader.inspect import Inspection, RunFacts, VersionFacts

LISTED_RUNS = 5
MESSAGE_CHARS = 2000  # of a check's message: what the store says (names, aliases, tags) is the student's to inflate
SHOWN_CHARS = 60  # of a run's name, model_type, tag or alias in a message


def run_label(run: RunFacts) -> str:
    name, model_type = clipped(run.name, SHOWN_CHARS), clipped(run.model_type or "", SHOWN_CHARS)
    kind = f", {model_type}" if model_type and run.model_type != run.name else ""
    return f"{run.run_id[:8]} ({name}{kind})" if name else f"{run.run_id[:8]}{kind}"


def version_label(version: VersionFacts) -> str:
    aliases = "".join(f" @{clipped(alias, SHOWN_CHARS)}" for alias in version.aliases[:3])
    return f"v{version.version} ({version.stage}{aliases})"


def versions_list(facts: Inspection) -> str:
    return ", ".join(version_label(version) for version in facts.versions[-10:])


def clipped(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def names(context: Context, items) -> str:
    return ", ".join(f"'{clipped(item, SHOWN_CHARS)}'" for item in items) or context.say("common.nothing")


def numbers(values) -> str:
    return "[" + ", ".join(f"{float(value):.4f}" if math.isfinite(float(value)) else "?" for value in values) + "]"


def listed(context: Context, items: list[str]) -> str:
    """The first LISTED_RUNS items, and how many more."""
    more = context.say("common.and_more", count=len(items) - LISTED_RUNS) if len(items) > LISTED_RUNS else ""
    return "; ".join(items[:LISTED_RUNS]) + more


def unread(context: Context, *prefixes: str) -> str:
    """What the store read could not tell about the facts named by ``prefixes``."""
    found = [fact for fact in context.facts.unread if fact.startswith(prefixes)]
    return context.say("common.could_not_read", facts="; ".join(found[:3])) if found else ""


def with_unread(context: Context, message: str, *prefixes: str) -> str:
    note = unread(context, *prefixes)
    return f"{message} ({note})" if note else message


def runs_in_scope(context: Context, on: str, selector) -> tuple[list[RunFacts], str]:
    """The runs a check with ``on = every_run | any_run | served_run`` looks at, and why there are none."""
    facts = context.facts
    if on != "served_run":
        return facts.runs, "" if facts.runs else with_unread(context, context.say("common.no_runs"), "the experiment")
    version = context.version(selector)
    if version is None:
        return [], context.say("common.no_version", where=context.where(selector))
    run = next((run for run in facts.runs if run.run_id == version.run_id), None)
    if run is None:
        return [], context.say("common.version_run_unknown", version=version.version, run=str(version.run_id)[:32])
    return [run], ""
