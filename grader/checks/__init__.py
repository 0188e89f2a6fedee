"""The rubric's vocabulary: one module per check kind (see README.md beside this file).

A kind module holds ``Params`` (a frozen dataclass of its parameters, read by ``grader.checks.params.parse``),
``check(params, context) -> Outcome`` and ``expectation(params, context) -> str`` (what passes, in the student's
terms). Every text comes from the ``checks`` catalogue of ``grader/locales`` in the context's language.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

from grader.i18n import Messages, messages

if TYPE_CHECKING:
    import nbformat

    from grader.checks.params import Selector
    from grader.inspect import Inspection, VersionFacts
    from grader.rubric import Rubric

KIND_NAMES = (
    "experiment_exists",
    "run_count",
    "run_fields",
    "run_models",
    "dataset_input",
    "artifact_present",
    "registered_version",
    "version_count",
    "version_tag",
    "alias_on_gated_version",
    "description_present",
    "best_run_is_served",
    "served_model_loads",
    "final_cell_predicts",
    "metrics_honest",
)
# The kinds that judge the served version on the grader's re-scoring: they must all select the same version.
SERVED_KINDS = ("best_run_is_served", "served_model_loads", "final_cell_predicts", "metrics_honest")


@dataclass
class Outcome:
    passed: bool
    message: str
    flags: list[str] = field(default_factory=list)  # raised whether or not the check passed


@dataclass
class Context:
    facts: Inspection
    notebook: nbformat.NotebookNode | None
    rubric: Rubric
    say: Messages  # the checks catalogue in the run's language

    def version(self, selector: Selector) -> VersionFacts | None:
        """The version ``selector`` names, as MLflow resolves it: the served one is what inspect resolved (and the
        probe scored); any other is looked up among the versions read (the newest in a stage, the alias's)."""
        if selector == self.rubric.served:
            return self.facts.production
        return self.facts.version_at(selector)

    def where(self, selector: Selector) -> str:
        """ "in stage 'Production'", "with alias 'champion'", in the run's language."""
        return self.say(f"where.{selector.by}", name=selector.name)


@cache
def kind(name: str) -> ModuleType:
    """The module of a kind; KeyError for an unknown one."""
    if name not in KIND_NAMES:
        raise KeyError(name)
    return importlib.import_module(f"grader.checks.{name}")


def catalogue(language: str | None) -> Messages:
    return messages("checks", language)
