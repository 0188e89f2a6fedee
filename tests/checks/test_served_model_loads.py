from grader.probe import ModelScore
from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts

CHECK = {"kind": "served_model_loads", "model": "housing-best", "stage": "Production"}


def test_the_served_files_predicting_every_row_pass(tmp_path):
    check = graded(good_facts(), rubric_with(tmp_path, CHECK))["served_model_loads"]
    assert check.passed and check.message.startswith("models:/housing-best/Production predicted all 4128 test rows")


def test_served_files_that_do_not_load_fail(tmp_path):
    facts = good_facts()
    facts.scores["m-0"] = ModelScore(False, "ModuleNotFoundError: No module named 'mine'")
    check = graded(facts, rubric_with(tmp_path, CHECK), language="es")["served_model_loads"]
    assert not check.passed and check.message == (
        "models:/housing-best/Production falló: ModuleNotFoundError: No module named 'mine'"
    )
