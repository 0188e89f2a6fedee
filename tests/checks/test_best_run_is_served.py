from grader.inspect import VersionFacts
from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts, run, scored

CHECK = {
    "kind": "best_run_is_served",
    "experiment": "homework-195",
    "metric": "rmse_test",
    "model": "housing-best",
    "stage": "Production",
}


def test_the_best_run_served_and_confirmed_by_rescoring_passes(tmp_path):
    check = graded(good_facts(), rubric_with(tmp_path, CHECK))["best_run_is_served"]
    assert check.passed and "the grader's re-scoring agrees (rmse=0.5000" in check.message


def test_another_run_served_fails(tmp_path):
    facts = good_facts()
    facts.production = VersionFacts("2", facts.runs[3].run_id, "Production", [], "/work/x", "m-3")
    check = graded(facts, rubric_with(tmp_path, CHECK), language="es")["best_run_is_served"]
    assert not check.passed and "pero la versión 2 en Production viene de la ejecución" in check.message


def test_highest_r2_is_best_when_the_direction_is_max(tmp_path):
    runs = [
        run(number, 0.5 + number / 100, metrics={"rmse_test": 0.5, "r2_test": 0.9 - number / 100})
        for number in range(10)
    ]
    facts = good_facts(runs=runs, scores={f"m-{number}": scored(0.5 + number / 100) for number in range(10)})
    for number, label in enumerate(facts.scores):
        facts.scores[label].r2 = 0.9 - number / 100
    check = {**CHECK, "metric": "r2_test", "direction": "max", "measure": "r2"}
    assert graded(facts, rubric_with(tmp_path, check))["best_run_is_served"].passed
    facts.scores["m-5"].r2 = 0.95  # the grader finds a better model than the served one
    result = graded(facts, rubric_with(tmp_path, check))["best_run_is_served"]
    assert not result.passed and "re-scoring disagrees" in result.message
