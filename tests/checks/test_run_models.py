from grader.probe import ModelScore
from grader.score import score
from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts, scored

CHECK = {"kind": "run_models", "experiment": "homework-195"}


def test_every_run_with_a_rescored_model_passes(tmp_path):
    assert graded(good_facts(), rubric_with(tmp_path, CHECK))["run_models"].passed


def test_a_model_the_probe_could_not_load_fails_and_says_why(tmp_path):
    facts = good_facts()
    facts.model_labels["m-4"] = "model-4"  # the probe's label, as models_to_score makes them
    facts.scores["model-4"] = ModelScore(False, "MlflowException: no MLmodel")
    check = graded(facts, rubric_with(tmp_path, CHECK))["run_models"]
    assert not check.passed and "1 of 10 runs" in check.message and "no MLmodel" in check.message


def test_one_model_under_every_run_raises_the_flag_and_keeps_the_points(tmp_path):
    facts = good_facts()
    facts.scores = {label: scored(0.5) for label in facts.scores}
    checks, flags = score(facts, None, rubric_with(tmp_path, CHECK), "es")
    assert checks[0].passed and flags == ["duplicate_models"]
    assert "; ojo: 10 ejecuciones tienen modelos que predicen exactamente lo mismo" in checks[0].message
