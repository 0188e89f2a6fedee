"""Scoring from facts: each check passes or fails for the right reason, and the probe's answer is never trusted."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import nbformat
import pytest

from grader.inspect import Inspection, RunFacts, VersionFacts
from grader.probe import ModelScore, parse_answer
from grader.rubric import load
from grader.score import not_executed, score

RUBRIC = load(Path(__file__).resolve().parents[1] / "homework" / "homework-195.rubric.toml")
CHECK_IDS = RUBRIC.check_ids
PREDICTIONS = [1.0000123 + index * 0.000731 for index in range(4128)]  # distinct and not round, like a model's


def run(number: int, rmse: float, **overrides) -> RunFacts:
    facts = {
        "run_id": f"{number:032x}",
        "name": f"run-{number}",
        "model_type": "ridge",
        "metrics": {"rmse_test": rmse, "r2_test": 0.6},
        "missing": [],
        "model_ids": [f"m-{number}"],
        "failed_models": 0,
    }
    return RunFacts(**{**facts, **overrides})


def scored(rmse: float) -> ModelScore:
    """A model's re-scoring; models of other rmse predict other numbers (rmse 0.5 predicts PREDICTIONS)."""
    predictions = [value + rmse - 0.5 for value in PREDICTIONS]
    return ModelScore(True, "", rmse, 0.8, predictions[:5], predictions)


def honest_scores(runs: list[RunFacts]) -> dict[str, ModelScore]:
    """The grader's re-scoring of every run's model agrees with what the run logged."""
    return {run.model_ids[-1]: scored(run.metrics["rmse_test"]) for run in runs if run.model_ids}


def good_facts(**overrides) -> Inspection:
    runs = overrides.pop("runs", None) or [run(number, 0.5 + number / 100) for number in range(10)]  # run 0: best
    facts = {
        "experiment_found": True,
        "experiment_names": ["Default", "homework-195"],
        "runs": runs,
        "registered": True,
        "versions": [VersionFacts("1", runs[0].run_id, "Production", [], "/work/mlruns/1/models/m-0/artifacts", "m-0")],
        "scores": honest_scores(runs),
        # The probe labels are the model ids here, to keep the tests readable.
        "model_labels": {model_id: model_id for each in runs for model_id in each.model_ids},
    }
    facts = {**facts, **overrides}
    inspection = Inspection(**facts)
    inspection.production = next((version for version in inspection.versions if version.stage == "Production"), None)
    return inspection


def last_cell_shows(text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("production.predict(X_test.head(5))")
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=1)]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import mlflow"), cell])


FIRST_FIVE = "array([" + ", ".join(f"{value:.8f}" for value in PREDICTIONS[:5]) + "])"  # numpy's repr


def outcome(facts: Inspection, notebook=None) -> dict[str, bool]:
    checks, _ = score(facts, notebook or last_cell_shows(FIRST_FIVE), RUBRIC)
    return {check.id: check.passed for check in checks}


def failing(facts: Inspection, notebook=None) -> set[str]:
    return {check for check, passed in outcome(facts, notebook).items() if not passed}


def test_a_complete_submission_passes_every_check_with_full_points():
    checks, flags = score(good_facts(), last_cell_shows(FIRST_FIVE), RUBRIC)
    assert [check.id for check in checks] == list(CHECK_IDS)
    assert all(check.passed for check in checks), [check.message for check in checks if not check.passed]
    assert sum(check.points for check in checks) == RUBRIC.max_score
    assert flags == []


def test_production_from_another_run_fails_best_is_production_and_names_both_runs():
    facts = good_facts()
    facts.production = VersionFacts("2", facts.runs[3].run_id, "Production", [], "/work/x", "m-3")
    checks, _ = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    check = next(check for check in checks if check.id == "best_is_production")
    assert not check.passed and check.points == 0
    assert facts.runs[0].run_id[:8] in check.message and facts.runs[3].run_id[:8] in check.message
    assert "0.5000" in check.message and "0.5300" in check.message


def test_nine_runs_fail_only_the_runs_check():
    assert failing(good_facts(runs=[run(number, 0.5 + number / 100) for number in range(9)])) == {"runs"}


def test_model_type_as_tag_is_enough_but_a_missing_metric_is_not():
    runs = [run(number, 0.5 + number / 100) for number in range(10)]
    runs[4] = run(4, 0.54, missing=["r2_test"], metrics={"rmse_test": 0.54})
    assert failing(good_facts(runs=runs)) == {"run_fields"}


def test_a_run_without_a_ready_model_fails_run_models():
    runs = [run(number, 0.5 + number / 100) for number in range(10)]
    runs[7] = run(7, 0.57, model_ids=[], failed_models=1)
    checks, _ = score(good_facts(runs=runs), last_cell_shows(FIRST_FIVE), RUBRIC)
    check = next(check for check in checks if check.id == "run_models")
    assert not check.passed and "1 failed to save" in check.message


def test_no_production_version_fails_everything_that_needs_it_and_every_run_is_still_rescored():
    facts = good_facts(versions=[VersionFacts("1", "x" * 32, "Staging", [], "/work/x")])
    assert failing(facts) == {"registered", "best_is_production", "production_loads", "final_prediction"}


@pytest.mark.parametrize(
    ("printed", "passes"),
    [
        (FIRST_FIVE, True),
        ("[1.00001 1.00074 1.00147 1.00221 1.00293]", True),  # numpy's str, rounded to 5 decimals
        ("0    1.00\n1    1.00\n2    1.00\n3    1.00\n4    1.00\nName: prediction", True),  # rounded to 2
        ("[1.0 1.0 1.0 1.0 1.0]", False),  # too coarse to tell one number from another
        ("[1.00001 1.00074 1.00147 1.00221]", False),  # four rows
        ("[1.00001 1.00001 1.00001 1.00001 1.00001]", False),  # one row, five times
        ("[1.00293 1.00221 1.00147 1.00074 1.00001]", False),  # the right rows, in the wrong order
        ("[1.00074 1.00147 1.00221 1.00293 1.00366]", False),  # rows 1 to 5, not the first five
        ("rmse: 0.4712\n[1.00001 1.00074 1.00147 1.00221 1.00293]", False),  # another number first
        ("[1.00001 1.00074 1.00147 1.00221 1.00293]\nrmse: 0.4712", True),  # another number after them
        ("[1.00001 1.00074 1.0 1.00221 1.00293]", False),  # one of them too coarse
    ],
)
def test_final_prediction_compares_printed_numbers_with_the_probes(printed, passes):
    assert outcome(good_facts(), last_cell_shows(printed))["final_prediction"] is passes


def test_final_prediction_rejects_plausible_numbers_that_are_not_the_models():
    facts = good_facts()
    assert not outcome(facts, last_cell_shows("array([1.9, 2.2, 3.7, 1.1, 0.2])"))["final_prediction"]
    assert not outcome(facts, last_cell_shows("array([9.111, 9.222, 9.333, 9.444, 9.555])"))["final_prediction"]


def test_final_prediction_fails_when_the_last_cell_raised():
    notebook = last_cell_shows(FIRST_FIVE)
    notebook.cells[-1].outputs.append(nbformat.v4.new_output("error", ename="MlflowException", evalue="not found"))
    checks, _ = score(good_facts(), notebook, RUBRIC)
    check = next(check for check in checks if check.id == "final_prediction")
    assert not check.passed and "MlflowException" in check.message


def test_dishonest_metric_fails_metrics_honest_and_raises_the_flag():
    facts = good_facts()
    facts.scores["m-0"] = ModelScore(True, "", 0.9, 0.4, PREDICTIONS[:5], PREDICTIONS)
    checks, flags = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    check = next(check for check in checks if check.id == "metrics_honest")
    assert not check.passed and flags == ["metrics_honest"]
    assert "logged rmse_test=0.5000 does NOT match the grader's 0.9000" in check.message


def test_nothing_to_rescore_fails_metrics_honest_without_the_flag():
    _, flags = score(good_facts(scores={}), last_cell_shows(FIRST_FIVE), RUBRIC)
    assert flags == []


def test_store_problem_is_the_experiment_checks_message():
    facts = Inspection(problem="The notebook points MLflow elsewhere (http://localhost:5000)")
    checks, _ = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    assert not any(check.passed for check in checks)
    assert "http://localhost:5000" in checks[0].message


def test_not_executed_lists_every_check_with_no_points():
    checks = not_executed(RUBRIC, "not a notebook")
    assert [check.id for check in checks] == list(CHECK_IDS)
    assert all(not check.passed and check.points == 0 and "not a notebook" in check.message for check in checks)


GOOD_ENTRY = {"ok": True, "error": None, "predictions": PREDICTIONS}
TARGETS = tuple(value + 0.5 for value in PREDICTIONS)  # every prediction off by exactly 0.5: rmse 0.5


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"not json",
        b"[1, 2, 3]",
        json.dumps({"production": "yes"}).encode(),
        json.dumps({"production": {**GOOD_ENTRY, "ok": "yes"}}).encode(),
        json.dumps({"production": {**GOOD_ENTRY, "predictions": [True] * len(PREDICTIONS)}}).encode(),
        json.dumps({"production": {**GOOD_ENTRY, "predictions": PREDICTIONS[:-1]}}).encode(),
        json.dumps({"production": {**GOOD_ENTRY, "predictions": {"head": PREDICTIONS}}}).encode(),
        json.dumps({"production": {**GOOD_ENTRY, "predictions": [*PREDICTIONS[:-1], "x"]}}).encode(),
        b'{"production": {"ok": true, "rmse": NaN}}',
        b"9" * 10_000_001,
    ],
)
def test_garbage_from_the_probe_is_a_failed_model_never_a_crash(answer):
    parsed = parse_answer(answer, ["production"], TARGETS, 5, "no usable answer")
    assert parsed["production"].ok is False
    assert parsed["production"].error


def test_a_well_formed_probe_answer_is_scored_by_the_grader_not_by_the_probe():
    forged = {**GOOD_ENTRY, "rmse": 0.01, "r2": 0.99, "head": [0.0] * 5}  # claims the probe's code could make
    parsed = parse_answer(json.dumps({"production": forged}).encode(), ["production"], TARGETS, 5, "")["production"]
    assert parsed.ok and parsed.predictions == PREDICTIONS and parsed.head == PREDICTIONS[:5]
    assert parsed.rmse == pytest.approx(0.5)
    spread = sum((value - sum(TARGETS) / len(TARGETS)) ** 2 for value in TARGETS)
    assert parsed.r2 == pytest.approx(1 - len(TARGETS) * 0.25 / spread)


def test_made_up_numbers_matching_some_test_rows_fail():
    """Five numbers that each equal the prediction of *some* test row, as a guess spread over 4,128 rows would."""
    printed = "[" + " ".join(f"{PREDICTIONS[index]:.2f}" for index in (900, 1800, 2700, 3600, 4000)) + "]"
    assert not outcome(good_facts(), last_cell_shows(printed))["final_prediction"]


def test_guessing_five_ordered_predictions_to_two_decimals_passes_with_probability_below_one_in_a_million():
    """The bound stated in grader/score.py, measured on the canonical split: the best guess for one row lands in
    the most crowded 0.01-wide window of the prices, or of a model's predictions when one has it."""
    from sklearn.datasets import fetch_california_housing
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    def most_crowded_window(values) -> float:
        values = sorted(values)
        low_ends = enumerate(values)
        return max(bisect.bisect_right(values, low + 0.01 + 1e-12) - index for index, low in low_ends) / len(values)

    features, target = fetch_california_housing(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.2, random_state=42)
    per_row = most_crowded_window(y_test)
    assert 0.04 < per_row < 0.045  # the censored price 5.00001
    assert per_row**5 < 2e-7
    for model in (LinearRegression(), RandomForestRegressor(n_estimators=20, max_depth=10, random_state=42)):
        assert most_crowded_window(model.fit(x_train, y_train).predict(x_test)) < per_row


def test_lies_on_runs_other_than_production_are_caught_by_rescoring_every_run():
    """Every run but one logs rmse_test + 0.5, so that one looks best and goes to Production: the grader's own
    numbers show a better model, and every lie is named."""
    truth = [0.5 + number / 100 for number in range(10)]
    runs = [run(number, truth[number] + (0 if number == 5 else 0.5)) for number in range(10)]
    runs.sort(key=lambda each: each.metrics["rmse_test"])  # as search_runs orders them
    scores = {f"m-{number}": scored(truth[number]) for number in range(10)}
    version = VersionFacts("1", runs[0].run_id, "Production", [], "/work/m-5", "m-5")
    facts = good_facts(runs=runs, scores=scores, versions=[version])
    checks, flags = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    by_id = {check.id: check for check in checks}
    assert not by_id["best_is_production"].passed
    assert "0.5500" in by_id["best_is_production"].message and "0.5000" in by_id["best_is_production"].message
    assert not by_id["metrics_honest"].passed and flags == ["metrics_honest"]
    assert "9 of 11 re-scored models do not match" in by_id["metrics_honest"].message


def test_production_serving_another_model_than_its_runs_is_judged_on_what_it_serves():
    """storage_location points Production at the worst model: the served files are what is scored."""
    facts = good_facts()
    facts.production.model_key = "m-9"  # inspect resolved Production's files to run 9's model
    checks, flags = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    by_id = {check.id: check for check in checks}
    assert not by_id["best_is_production"].passed and "0.5900" in by_id["best_is_production"].message
    assert not by_id["metrics_honest"].passed and flags == ["metrics_honest"]
    assert (
        "the Production model: logged rmse_test=0.5000 does NOT match the grader's 0.5900"
        in by_id["metrics_honest"].message
    )


def test_a_ready_model_the_probe_cannot_load_is_no_model():
    facts = good_facts()
    facts.scores["m-4"] = ModelScore(False, "MlflowException: Could not find an 'MLmodel' configuration file")
    check = next(check for check in score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)[0] if check.id == "run_models")
    assert not check.passed and "1 of 10 runs" in check.message and "MLmodel" in check.message


def test_a_fact_that_could_not_be_read_is_named_in_the_checks_that_need_it():
    facts = good_facts(versions=[], unread=["where version 1's files are: MlflowException: Logged model m-1 not found"])
    facts.production = None
    checks = {check.id: check for check in score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)[0]}
    assert checks["run_models"].passed and checks["runs"].passed
    assert not checks["production_loads"].passed


def test_one_model_logged_under_every_run_keeps_its_points_but_raises_a_flag():
    facts = good_facts()
    same = scored(0.5)
    facts.scores = {label: same for label in facts.scores}
    facts.runs = [run(number, 0.5) for number in range(10)]
    checks, flags = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    run_models = next(check for check in checks if check.id == "run_models")
    assert run_models.passed and "10 runs have models that predict exactly alike" in run_models.message
    assert flags == ["duplicate_models"]


def test_a_production_run_tied_with_the_top_one_is_the_best():
    runs = [run(number, 0.5 + number / 100) for number in range(10)]
    runs[1] = run(1, 0.5)  # the same model trained twice: search_runs may list either first
    facts = good_facts(runs=runs)
    facts.production = VersionFacts("1", runs[1].run_id, "Production", [], "/work/m-1", "m-1")
    facts.scores["m-1"] = scored(0.5)
    assert "best_is_production" not in failing(facts)


def test_a_run_with_a_baseline_beside_its_model_is_honest_about_the_one_it_measured():
    facts = good_facts()
    facts.runs[0].model_ids.append("m-baseline")  # logged after the registered model
    facts.model_labels["m-baseline"] = "m-baseline"
    facts.scores["m-baseline"] = scored(0.95)
    checks, flags = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    assert all(check.passed for check in checks) and "metrics_honest" not in flags


def test_what_the_store_says_cannot_inflate_a_message():
    facts = good_facts()
    facts.runs[3] = run(3, 0.53, name="N" * 3_000_000, missing=["r2_test"])
    facts.versions[0].aliases = [f"a{index}" + "x" * 300 for index in range(20_000)]
    checks, _ = score(facts, last_cell_shows(FIRST_FIVE), RUBRIC)
    assert max(len(check.message) for check in checks) <= 2000
