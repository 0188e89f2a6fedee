"""Turn the facts found in a submission into the rubric's checks, each with points and a message.

Every check that can be verified is decided on the grader's own numbers: each run's model as the probe loaded and
re-scored it, and the Production version's files exactly as ``models:/NAME/Production`` resolves them.
"""

from __future__ import annotations

import itertools
import math
import re
from decimal import Decimal

import nbformat

from grader.inspect import Inspection, RunFacts
from grader.probe import ModelScore
from grader.result import Check
from grader.rubric import CHECK_IDS, Rubric

NUMBER = re.compile(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?")
# The first numbers the last cell shows must be the Production model's predictions of the first rows of X_test,
# in order, each to at least two decimals (a number matches within half its last printed digit, or the rubric's
# tolerance if larger). Guessing them cannot pass: no 0.01-wide window holds more than 4.5 % of the test split's
# prices (the most crowded is the censored 5.00001), and a model's predictions are at least as spread out unless
# one has the model; five rows in order then pass by chance with probability below 0.045^5 ≈ 1.8e-7 (measured in
# tests/test_grader_score.py).
COARSEST_RESOLUTION = Decimal("0.01")
LISTED_RUNS = 5
MESSAGE_CHARS = 2000  # of a check's message: what the store says (names, aliases) is the student's to inflate
SHOWN_CHARS = 60  # of a run's name or model_type in a message


def expectations(rubric: Rubric) -> dict[str, str]:
    """What passes each check, in the student's terms."""
    rows = rubric.split.prediction_rows
    return {
        "experiment": f"an experiment named '{rubric.experiment}'",
        "runs": f"at least {rubric.min_runs} runs in it",
        "run_fields": f"every run has {_names(rubric.param_or_tag)} (param or tag) and the metrics "
        f"{_names(rubric.metrics)}",
        "run_models": "every run has a logged model that the grader can load and predict with",
        "registered": f"a registered model '{rubric.registered_model}' with a version in {rubric.production_label}",
        "best_is_production": f"the top run of search_runs ordered by {rubric.rank_by} ASC is the run of the "
        f"version in {rubric.production_label}, and no run's model scores better when the grader re-scores them",
        "production_loads": f"{rubric.production_uri} loads and predicts the test split (test_size="
        f"{rubric.split.test_size}, random_state={rubric.split.random_state})",
        "final_prediction": f"the last code cell shows the Production model's predictions of the first {rows} rows "
        f"of X_test (X_test.head({rows})), in order, to at least two decimals",
        "metrics_honest": f"every run's logged {rubric.rank_by} matches the grader's re-scoring of its model within "
        f"{rubric.rmse_tolerance}",
    }


def not_executed(rubric: Rubric, reason: str) -> list[Check]:
    expected = expectations(rubric)
    return [
        Check(id, False, 0, rubric.points[id], f"not checked: {reason}", expected[id], rubric.hints.get(id, ""))
        for id in CHECK_IDS
    ]


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
    duplicates = _identical_models(facts)
    if duplicates:  # points stay (each run has a model); the instructor sees that the models are one
        passed, message = outcomes["run_models"]
        outcomes["run_models"] = (passed, f"{message}; note: {duplicates}")
    checks = [
        Check(
            id,
            passed,
            rubric.points[id] if passed else 0,
            rubric.points[id],
            message,
            expected[id],
            rubric.hints.get(id, ""),
        )
        for id, (passed, message) in outcomes.items()
    ]
    return checks, [flag for flag, raised in (("metrics_honest", mismatch), ("duplicate_models", duplicates)) if raised]


def _experiment(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    if facts.experiment_found:
        return True, f"found experiment '{rubric.experiment}'"
    return False, facts.problem or _unread(facts, "the experiments") or f"no experiment named '{rubric.experiment}'"


def _runs(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    count = len(facts.runs)
    return count >= rubric.min_runs, _with_unread(
        f"found {count} runs; at least {rubric.min_runs} are needed", facts, "the experiment's runs"
    )


def _run_fields(facts: Inspection) -> tuple[bool, str]:
    if not facts.runs:
        return False, _with_unread("no runs to check", facts, "the experiment's runs")
    lacking = [run for run in facts.runs if run.missing]
    if not lacking:
        return True, f"all {len(facts.runs)} runs have every required field"
    listed = "; ".join(f"run {_run_label(run)} lacks {_names(run.missing)}" for run in lacking[:LISTED_RUNS])
    return False, f"{len(lacking)} of {len(facts.runs)} runs lack fields: {listed}"


def _run_models(facts: Inspection) -> tuple[bool, str]:
    if not facts.runs:
        return False, _with_unread("no runs to check", facts, "the experiment's runs")
    lacking = [run for run in facts.runs if facts.run_score(run) is None]
    if not lacking:
        return True, f"all {len(facts.runs)} runs have a logged model that the grader loaded and re-scored"
    listed = "; ".join(f"{_run_label(run)}: {_why_no_model(facts, run)}" for run in lacking[:LISTED_RUNS])
    outside = (
        f"; models stored outside the submission's folder are ignored: {facts.outside[0]}" if facts.outside else ""
    )
    message = f"{len(lacking)} of {len(facts.runs)} runs have no model the grader could load: {listed}{outside}"
    return False, _with_unread(message, facts, "the experiment's logged models")


def _identical_models(facts: Inspection) -> str:
    """Runs whose models predict exactly the same numbers: one model logged several times, under other names."""
    by_predictions: dict[tuple[float, ...], list[RunFacts]] = {}
    for run in facts.runs:
        score = facts.run_score(run)
        if score is not None:
            by_predictions.setdefault(tuple(score.predictions), []).append(run)
    groups = [runs for runs in by_predictions.values() if len(runs) > 1]
    if not groups:
        return ""
    listed = "; ".join(", ".join(_run_label(run) for run in runs[:LISTED_RUNS]) for runs in groups[:3])
    return f"{sum(map(len, groups))} runs have models that predict exactly alike ({listed})"


def _why_no_model(facts: Inspection, run: RunFacts) -> str:
    if not run.model_ids:
        return f"no logged model ({run.failed_models} failed to save)" if run.failed_models else "no logged model"
    if any(model_id in facts.unscored for model_id in run.model_ids):
        return "not re-scored: the submission logged too many models"
    errors = [facts.scores[model_id].error for model_id in run.model_ids if model_id in facts.scores]
    return f"its model did not load or predict ({errors[-1][:200]})" if errors else "its model was not re-scored"


def _registered(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    if not facts.registered:
        return False, _unread(facts, "the registered model") or f"no registered model named '{rubric.registered_model}'"
    versions = ", ".join(_version_label(version) for version in facts.versions[-10:])
    if facts.production is None:
        message = f"'{rubric.registered_model}' has no version in {rubric.production_label}; versions: {versions}"
        return False, _with_unread(message, facts, "which version", "the versions")
    return True, f"version {facts.production.version} is in {rubric.production_label}; versions: {versions}"


def _best_is_production(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    """The acceptance criterion on the logged metrics, then the same question asked of the grader's numbers."""
    best = facts.best
    if best is None or rubric.rank_by not in best.metrics:
        return False, f"no run with {rubric.rank_by} to rank"
    found = f"best run by logged {rubric.rank_by} is {_run_label(best)} with {best.metrics[rubric.rank_by]:.4f}"
    production = facts.production
    if production is None:
        return False, f"{found}, but no version is in {rubric.production_label}"
    production_run = next((run for run in facts.runs if run.run_id == production.run_id), None)
    # search_runs orders a tie arbitrarily: a Production run as good as the top one is the top one.
    tied = production_run is not None and math.isclose(
        production_run.metrics.get(rubric.rank_by, math.inf), best.metrics[rubric.rank_by], rel_tol=0, abs_tol=1e-9
    )
    if production_run is not best and not tied:
        where = _run_label(production_run) if production_run else f"{production.run_id} (not a run of the experiment)"
        if production_run and rubric.rank_by in production_run.metrics:
            where += f" with {rubric.rank_by}={production_run.metrics[rubric.rank_by]:.4f}"
        return False, f"{found}, but version {production.version} in Production comes from run {where}"
    served = facts.production_score
    if served is None or not served.ok:
        return False, (
            f"{found} and version {production.version} comes from it, but the grader could not re-score the "
            "Production model to confirm it"
        )
    better = min(
        ((score.rmse, run) for run in facts.runs for score in facts.run_scores(run)),
        key=lambda pair: pair[0],
        default=None,
    )
    if better and better[0] < served.rmse - rubric.rmse_tolerance:
        return False, (
            f"{found}, but the grader's re-scoring disagrees: the Production model scores rmse={served.rmse:.4f} "
            f"while the model of run {_run_label(better[1])} scores {better[0]:.4f} (logged: "
            f"{_logged(better[1], rubric)})"
        )
    return True, (
        f"{found}; version {production.version} in Production comes from it, and the grader's re-scoring agrees "
        f"(rmse={served.rmse:.4f}, the best of every run's model)"
    )


def _production_loads(facts: Inspection, rubric: Rubric) -> tuple[bool, str]:
    production = facts.production
    if production is None:
        return False, f"no version in {rubric.production_label} to load"
    if not production.location:
        return False, _with_unread(
            f"could not find where version {production.version}'s files are", facts, "where version"
        )
    if production.location in facts.outside:
        return False, f"not loaded: its files are outside the submission's folder ({production.location})"
    served = facts.production_score
    if served is None or not served.ok:
        return False, f"{rubric.production_uri} failed: {served.error if served else 'not scored'}"
    return True, (
        f"{rubric.production_uri} predicted all {len(served.predictions)} test rows: "
        f"rmse={served.rmse:.4f}, r2={served.r2:.4f}; first rows: {_numbers(served.head)}"
    )


def _final_prediction(facts: Inspection, notebook: nbformat.NotebookNode, rubric: Rubric) -> tuple[bool, str]:
    wanted = rubric.split.prediction_rows
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    if not code_cells:
        return False, "the notebook has no code cell"
    outputs = code_cells[-1].get("outputs", [])
    error = next((output for output in outputs if output.output_type == "error"), None)
    if error is not None:
        return False, f"the last code cell raised {error.get('ename', '?')}: {error.get('evalue', '')}"[:300]
    printed = _printed_numbers(outputs, wanted)
    if not printed:
        return False, "the last code cell shows no predictions (no numbers with two or more decimals in its output)"
    served = facts.production_score
    if served is None or not served.ok:
        return False, (
            f"the last code cell shows {_numbers(printed[:wanted])}, but the Production model could not be scored "
            "to compare"
        )
    shown = f"the last code cell shows {_numbers(printed[:10])}"
    if _are_predictions(printed, served.head[:wanted], rubric.prediction_tolerance):
        return True, f"{shown}: the Production model's predictions of the first {wanted} rows of X_test, in order"
    return False, (
        f"{shown}; expected its first {wanted} numbers to be the Production model's predictions of the first "
        f"{wanted} rows of X_test, in order, to at least two decimals: {_numbers(served.head)}"
    )


def _metrics_honest(facts: Inspection, rubric: Rubric) -> tuple[bool, str, bool]:
    """(passed, message, mismatch): every run whose model the grader re-scored, and the Production model as
    served; nothing re-scorable fails without claiming dishonesty."""
    # A run may have logged several models (say, a baseline beside the one it registered): its metric is honest
    # if it is one of theirs.
    compared = [(_run_label(run), run, _closest(run, facts.run_scores(run), rubric)) for run in facts.runs]
    production_run = next(
        (run for run in facts.runs if facts.production and run.run_id == facts.production.run_id), None
    )
    if production_run is not None:
        compared.append(("the Production model", production_run, facts.production_score))
    findings = [finding for label, run, score in compared if (finding := _compare(label, run, score, rubric))]
    if not findings:
        return False, "nothing could be re-scored (no loadable model of a run with a logged metric)", False
    wrong = [message for agrees, message in findings if not agrees]
    if not wrong:
        return True, f"the logged {rubric.rank_by} of all {len(findings)} re-scored models matches the grader's", False
    listed = "; ".join(wrong[:LISTED_RUNS]) + (
        f"; and {len(wrong) - LISTED_RUNS} more" if len(wrong) > LISTED_RUNS else ""
    )
    return False, f"{len(wrong)} of {len(findings)} re-scored models do not match: {listed}", True


def _closest(run: RunFacts, scores: list[ModelScore], rubric: Rubric) -> ModelScore | None:
    logged = run.metrics.get(rubric.rank_by)
    if logged is None or not scores:
        return None
    return min(scores, key=lambda score: abs(score.rmse - logged) if math.isfinite(logged) else 0)


def _compare(label: str, run: RunFacts | None, model_score: ModelScore | None, rubric: Rubric):
    if run is None or rubric.rank_by not in run.metrics or model_score is None or not model_score.ok:
        return None
    logged, actual = run.metrics[rubric.rank_by], model_score.rmse
    agrees = abs(logged - actual) <= rubric.rmse_tolerance
    verdict = "matches" if agrees else "does NOT match"
    return agrees, f"{label}: logged {rubric.rank_by}={logged:.4f} {verdict} the grader's {actual:.4f}"


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


def _logged(run: RunFacts, rubric: Rubric) -> str:
    value = run.metrics.get(rubric.rank_by)
    return f"{rubric.rank_by}={value:.4f}" if value is not None else f"no {rubric.rank_by}"


def _unread(facts: Inspection, *prefixes: str) -> str:
    """What the store read could not tell about the facts named by ``prefixes``."""
    unread = [fact for fact in facts.unread if fact.startswith(prefixes)]
    return ("could not read " + "; ".join(unread[:3])) if unread else ""


def _with_unread(message: str, facts: Inspection, *prefixes: str) -> str:
    unread = _unread(facts, *prefixes)
    return f"{message} ({unread})" if unread else message


def _run_label(run: RunFacts) -> str:
    name, model_type = _clipped(run.name, SHOWN_CHARS), _clipped(run.model_type or "", SHOWN_CHARS)
    kind = f", {model_type}" if model_type and run.model_type != run.name else ""
    return f"{run.run_id[:8]} ({name}{kind})" if name else f"{run.run_id[:8]}{kind}"


def _version_label(version) -> str:
    aliases = "".join(f" @{_clipped(alias, SHOWN_CHARS)}" for alias in version.aliases[:3])
    return f"v{version.version} ({version.stage}{aliases})"


def _clipped(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names(names) -> str:
    return ", ".join(f"'{name}'" for name in names) or "nothing"


def _numbers(values) -> str:
    return "[" + ", ".join(f"{float(value):.4f}" if math.isfinite(float(value)) else "?" for value in values) + "]"
