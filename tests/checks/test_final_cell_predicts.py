from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import FIRST_FIVE, PREDICTIONS, good_facts, last_cell_shows

CHECK = {"kind": "final_cell_predicts", "model": "housing-best", "stage": "Production", "rows": 3}


def test_the_served_models_first_rows_pass(tmp_path):
    shown = "[" + " ".join(f"{value:.3f}" for value in PREDICTIONS[:3]) + "]"
    check = graded(good_facts(), rubric_with(tmp_path, CHECK), last_cell_shows(shown))["final_cell_predicts"]
    assert check.passed and "the first 3 rows of X_test" in check.message


def test_other_numbers_fail_in_spanish(tmp_path):
    notebook = last_cell_shows("[1.5 2.5 3.5]")
    check = graded(good_facts(), rubric_with(tmp_path, CHECK), notebook, "es")["final_cell_predicts"]
    assert not check.passed and check.message.startswith("la última celda de código muestra [1.5000, 2.5000, 3.5000]")
    five = graded(good_facts(), rubric_with(tmp_path, CHECK), last_cell_shows(FIRST_FIVE))["final_cell_predicts"]
    assert five.passed  # the first three of five numbers are what counts
