from grader.probe import ModelScore
from grader.score import score
from tests.checks.conftest import rubric_with
from tests.test_grader_score import PREDICTIONS, good_facts

CHECK = {
    "kind": "metrics_honest",
    "experiment": "homework-195",
    "metric": "rmse_test",
    "model": "housing-best",
    "stage": "Production",
}


def test_logged_metrics_matching_the_rescoring_pass(tmp_path):
    checks, flags = score(good_facts(), None, rubric_with(tmp_path, CHECK))
    assert checks[0].passed and flags == []


def test_a_logged_metric_the_rescoring_contradicts_fails_with_the_flag(tmp_path):
    facts = good_facts()
    facts.scores["m-0"] = ModelScore(True, "", 0.9, 0.4, PREDICTIONS[:5], PREDICTIONS)
    checks, flags = score(facts, None, rubric_with(tmp_path, CHECK), "es")
    assert not checks[0].passed and flags == ["metrics_honest"]
    assert "el modelo en Production: rmse_test registrado=0.5000 NO coincide con el 0.9000 del calificador" in (
        checks[0].message
    )
