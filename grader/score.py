"""Turn the facts found in a submission into the rubric's checks, each with points and a message."""

from __future__ import annotations

import bisect
import math
import re
from decimal import Decimal

import nbformat

from grader.inspect import Inspection, RunFacts
from grader.probe import ModelScore
from grader.result import Check
from grader.rubric import CHECK_IDS, Rubric

NUMBER = re.compile(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?")
# A printed number needs at least this resolution to count as a prediction: "2.5" could match anything.
COARSEST_RESOLUTION = Decimal("0.01")
MAX_PRINTED_NUMBERS = 200
LISTED_RUNS = 5


def expectations(rubric: Rubric) -> dict[str, str]:
    """What passes each check, in the student's terms."""
    return {
        "experiment": f"an experiment named '{rubric.experiment}'",
        "runs": f"at least {rubric.min_runs} runs in it",
        "run_fields": f"every run has {_names(rubric.param_or_tag)} (param or tag) and the metrics "
        f"{_names(rubric.metrics)}",
        "run_models": "every run has a logged model that saved completely (status READY)",
        "registered": f"a registered model '{rubric.registered_model}' with a version in {rubric.production_label}",
        "best_is_production": f"the top run of search_runs ordered by {rubric.rank_by} ASC is the run of the "
        f"version in {rubric.production_label}",
        "production_loads": f"{rubric.production_uri} loads and predicts the test split (test_size="
        f"{rubric.split.test_size}, random_state={rubric.split.random_state})",
        "final_prediction": f"the last code cell shows {rubric.split.prediction_rows} predictions of the "
        "Production model for test rows",
        "metrics_honest": f"the logged {rubric.rank_by} matches the grader's re-scoring within {rubric.rmse_tolerance}",
    }


def not_executed(rubric: Rubric, reason: str) -> list[Check]:
    expected = expectations(rubric)
    return [Check(id, False, 0, rubric.points[id], f"not checked: {reason}", expected[id]) for id in CHECK_IDS]


def score(facts: Inspection, notebook: nbformat.NotebookNode, rubric: Rubric) -> tuple[list[Check], list[str]]:
    """The checks, and the flags to raise: ``metrics_honest`` when a logged metric disagrees with re-scoring."""
    honest, honesty_message, mismatch = _metrics_honest(facts, rubric)
    outcomes = {
        "experiment": _experiment(facts, rubric),
        "runs": _runs(facts, rubric),
        "run_fields": _run_fields(facts),
        "run_models": _run_models(facts),
        "registered": _registered(facts, rubric),
        "best_is_production": _best_is_production(facts, rubric),
        "production_loads": _production_loads(facts, rubric),
        "final_prediction": _final_prediction(facts, notebook, rubric),
        "metrics_honest": (honest, honesty_message),
    }
    expected = expectations(rubric)
    checks = [
        Check(id, passed, rubric.points[id] if passed else 0, rubric.points[id], message, expected[id])
        for id, (passed, message) in outcomes.items()
    ]
    return checks, ["metrics_honest"] if mismatch else []


def _experiment(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    if facts.experiment_found:
        return True, f"found experiment '{rubric.experiment}'"
    return False, facts.problem or f"no experiment named '{rubric.experiment}'"


def _runs(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    count = len(facts.runs)
    return count >= rubric.min_runs, f"found {count} runs; at least {rubric.min_runs} are needed"


def _run_fields(facts: Inspection) -> tuple[bool, str]:
    if not facts.runs:
        return False, "no runs to check"
    lacking = [run for run in facts.runs if run.missing]
    if not lacking:
        return True, f"all {len(facts.runs)} runs have every required field"
    listed = "; ".join(f"run {_run_label(run)} lacks {_names(run.missing)}" for run in lacking[:LISTED_RUNS])
    return False, f"{len(lacking)} of {len(facts.runs)} runs lack fields: {listed}"


def _run_models(facts: Inspection) -> tuple[bool, str]:
    if not facts.runs:
        return False, "no runs to check"
    lacking = [run for run in facts.runs if not run.ready_models]
    if not lacking:
        return True, f"all {len(facts.runs)} runs have a logged model"
    listed = ", ".join(
        _run_label(run) + (f" ({run.failed_models} failed to save)" if run.failed_models else "")
        for run in lacking[:LISTED_RUNS]
    )
    outside = (
        f"; models stored outside the submission's folder are ignored: {facts.outside[0]}" if facts.outside else ""
    )
    return False, f"{len(lacking)} of {len(facts.runs)} runs have no logged model: {listed}{outside}"


def _registered(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    if not facts.registered:
        return False, f"no registered model named '{rubric.registered_model}'"
    versions = ", ".join(
        f"v{version.version} ({version.stage}{''.join(' @' + alias for alias in version.aliases)})"
        for version in facts.versions
    )
    if facts.production is None:
        return False, f"'{rubric.registered_model}' has no version in {rubric.production_label}; versions: {versions}"
    return True, f"version {facts.production.version} is in {rubric.production_label}; versions: {versions}"


def _best_is_production(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    best = facts.best
    if best is None or rubric.rank_by not in best.metrics:
        return False, f"no run with {rubric.rank_by} to rank"
    found = f"best run is {_run_label(best)} with {rubric.rank_by}={best.metrics[rubric.rank_by]:.4f}"
    if facts.production is None:
        return False, f"{found}, but no version is in {rubric.production_label}"
    production_run = next((run for run in facts.runs if run.run_id == facts.production.run_id), None)
    if production_run is best:
        return True, f"{found}, and version {facts.production.version} in Production comes from it"
    where = _run_label(production_run) if production_run else f"{facts.production.run_id} (not a run of the experiment)"
    if production_run and rubric.rank_by in production_run.metrics:
        where += f" with {rubric.rank_by}={production_run.metrics[rubric.rank_by]:.4f}"
    return False, f"{found}, but version {facts.production.version} in Production comes from run {where}"


def _production_loads(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    if facts.production is None:
        return False, f"no version in {rubric.production_label} to load"
    if facts.production.location in facts.outside:
        return False, f"not loaded: its files are outside the submission's folder ({facts.production.location})"
    production = facts.scores.get("production")
    if production is None or not production.ok:
        return False, f"{rubric.production_uri} failed: {production.error if production else 'not scored'}"
    return True, (
        f"{rubric.production_uri} predicted all {len(production.predictions)} test rows: "
        f"rmse={production.rmse:.4f}, r2={production.r2:.4f}; first rows: {_numbers(production.head)}"
    )


def _final_prediction(facts: Inspection, notebook: nbformat.NotebookNode, rubric: Rubric) -> tuple[bool, str]:
    wanted = rubric.split.prediction_rows
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    if not code_cells:
        return False, "the notebook has no code cell"
    outputs = code_cells[-1].get("outputs", [])
    error = next((output for output in outputs if output.output_type == "error"), None)
    if error is not None:
        return False, f"the last code cell raised {error.ename}: {error.evalue}"[:300]
    printed = _printed_numbers(outputs)
    if not printed:
        return False, "the last code cell shows no predictions (no decimal numbers in its output)"
    production = facts.scores.get("production")
    if production is None or not production.ok:
        return False, f"the last code cell shows {_numbers(printed[:wanted])}, but the Production model could not be "
        "scored to compare"
    matched = _matching_rows(printed, production.predictions, rubric.prediction_tolerance)
    shown = f"the last code cell shows {_numbers(printed[:10])}"
    if matched >= wanted:
        return True, f"{shown}; {matched} of them are the Production model's predictions for test rows"
    return False, (
        f"{shown}; only {matched} match the Production model's predictions for test rows, e.g. the first "
        f"{wanted}: {_numbers(production.head)}"
    )


def _metrics_honest(facts: Inspection, rubric: Rubric) -> tuple[bool, str, bool]:
    """(passed, message, mismatch): not re-scorable fails without claiming dishonesty."""
    by_run = {run.run_id: run for run in facts.runs}
    rescored = []
    if facts.production:
        rescored.append(("Production model", by_run.get(facts.production.run_id), facts.scores.get("production")))
    if "best" in facts.scores:
        rescored.append(("best run's model", facts.best, facts.scores["best"]))
    findings, honest = [], True
    for label, run, model_score in rescored:
        finding = _compare(label, run, model_score, rubric)
        if finding:
            findings.append(finding[1])
            honest = honest and finding[0]
    if not findings:
        return False, "nothing could be re-scored (no loadable Production or best model with a logged metric)", False
    return honest, "; ".join(findings), not honest


def _compare(label: str, run: RunFacts | None, model_score: ModelScore | None, rubric: Rubric):
    if run is None or rubric.rank_by not in run.metrics or model_score is None or not model_score.ok:
        return None
    logged, actual = run.metrics[rubric.rank_by], model_score.rmse
    agrees = abs(logged - actual) <= rubric.rmse_tolerance
    verdict = "matches" if agrees else "does NOT match"
    return agrees, f"{label}: logged {rubric.rank_by}={logged:.4f} {verdict} the grader's {actual:.4f}"


def _printed_numbers(outputs: list) -> list[Decimal]:
    texts = []
    for output in outputs:
        if output.output_type == "stream" and output.get("name") == "stdout":
            texts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            texts.append(str(output.get("data", {}).get("text/plain", "")))
    numbers = [Decimal(text) for text in NUMBER.findall("\n".join(texts))[:MAX_PRINTED_NUMBERS]]
    return [number for number in numbers if Decimal(1).scaleb(number.as_tuple().exponent) <= COARSEST_RESOLUTION]


def _matching_rows(printed: list[Decimal], predictions: list[float], tolerance: float) -> int:
    """How many printed numbers equal (to their printed precision) the prediction of a distinct test row."""
    unused = sorted(predictions)
    matched = 0
    for number in printed:
        slack = max(tolerance, float(Decimal(1).scaleb(number.as_tuple().exponent)) / 2) + 1e-12
        value = float(number)
        index = _nearest(unused, value)
        if index is not None and abs(unused[index] - value) <= slack:
            del unused[index]
            matched += 1
    return matched


def _nearest(values: list[float], target: float) -> int | None:
    position = bisect.bisect_left(values, target)
    candidates = [index for index in (position - 1, position) if 0 <= index < len(values)]
    return min(candidates, key=lambda index: abs(values[index] - target), default=None)


def _run_label(run: RunFacts) -> str:
    kind = f", {run.model_type}" if run.model_type and run.model_type != run.name else ""
    return f"{run.run_id[:8]} ({run.name}{kind})" if run.name else f"{run.run_id[:8]}{kind}"


def _names(names) -> str:
    return ", ".join(f"'{name}'" for name in names) or "nothing"


def _numbers(values) -> str:
    return "[" + ", ".join(f"{float(value):.4f}" if math.isfinite(float(value)) else "?" for value in values) + "]"
