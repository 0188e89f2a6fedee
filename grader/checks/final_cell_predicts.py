"""The last code cell shows the served model's predictions of the first ``rows`` rows of X_test, in order.

Each shown number must have at least two decimals and match within half its last printed digit (or the tolerance,
if larger). Guessing them cannot pass: no 0.01-wide window holds more than 4.5 % of the test split's prices (the
most crowded is the censored 5.00001), and a model's predictions are at least as spread out unless one has the
model; five rows in order then pass by chance with probability below 0.045^5 ≈ 1.8e-7 (measured in
tests/test_grader_score.py).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from decimal import Decimal

from grader.checks import Context, Outcome
from grader.checks.common import numbers
from grader.checks.params import OfModel

NUMBER = re.compile(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?")
COARSEST_RESOLUTION = Decimal("0.01")


@dataclass(frozen=True, kw_only=True)
class Params(OfModel):
    rows: int = 5
    tolerance: float | None = None

    def problem(self) -> str | None:
        return None if self.rows > 0 else f"'rows' must be positive, not {self.rows!r}"


def check(params: Params, context: Context) -> Outcome:
    say, wanted, served_name = context.say, params.rows, params.selector.short
    cells = context.notebook.cells if context.notebook is not None else []
    code_cells = [cell for cell in cells if cell.cell_type == "code" and cell.source.strip()]
    if not code_cells:
        return Outcome(False, say("final_cell_predicts.no_code"))
    outputs = code_cells[-1].get("outputs", [])
    error = next((output for output in outputs if output.output_type == "error"), None)
    if error is not None:
        raised = say("final_cell_predicts.raised", ename=error.get("ename", "?"), evalue=error.get("evalue", ""))
        return Outcome(False, raised[:300])
    printed = _printed_numbers(outputs, wanted)
    if not printed:
        return Outcome(False, say("final_cell_predicts.no_numbers"))
    version = context.version(params.selector)
    served = context.facts.version_score(version) if version is not None else None
    if served is None or not served.ok:
        return Outcome(False, say("final_cell_predicts.unscored", shown=numbers(printed[:wanted]), served=served_name))
    shown = say("final_cell_predicts.shows", shown=numbers(printed[:10]))
    head = served.predictions[:wanted]
    tolerance = params.tolerance if params.tolerance is not None else context.rubric.prediction_tolerance
    if _are_predictions(printed, head, tolerance):
        return Outcome(True, say("final_cell_predicts.passed", shown=shown, served=served_name, rows=wanted))
    return Outcome(
        False, say("final_cell_predicts.failed", shown=shown, served=served_name, rows=wanted, head=numbers(head))
    )


def expectation(params: Params, context: Context) -> str:
    return context.say("final_cell_predicts.expected", served=params.selector.short, rows=params.rows)


def _printed_numbers(outputs: list, count: int) -> list[Decimal]:
    """The first ``count`` decimal numbers the outputs show, in order."""
    texts = []
    for output in outputs:
        if output.output_type == "stream" and output.get("name") == "stdout":
            texts.append(str(output.get("text", "")))
        elif output.output_type in ("execute_result", "display_data"):
            texts.append(str(output.get("data", {}).get("text/plain", "")))
    return [Decimal(match[0]) for match in itertools.islice(NUMBER.finditer("\n".join(texts)), count)]


def _are_predictions(printed: list[Decimal], head: list[float], tolerance: float) -> bool:
    """Whether the printed numbers are ``head``, one by one, each as precise as COARSEST_RESOLUTION or more."""

    def matches(number: Decimal, value: float) -> bool:
        if _resolution(number) > COARSEST_RESOLUTION:
            return False  # "1.0" could be any of a hundred predictions
        slack = max(tolerance, float(_resolution(number)) / 2) + 1e-12
        return abs(float(number) - value) <= slack

    return len(head) > 0 and len(printed) == len(head) and all(map(matches, printed, head))


def _resolution(number: Decimal) -> Decimal:
    return Decimal(1).scaleb(number.as_tuple().exponent)
