from grader.inspect import Inspection
from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts

CHECK = {"kind": "experiment_exists", "experiment": "homework-195"}


def test_an_experiment_of_that_name_passes(tmp_path):
    check = graded(good_facts(), rubric_with(tmp_path, CHECK))["experiment_exists"]
    assert check.passed and check.points == 1 and check.message == "found experiment 'homework-195'"


def test_no_such_experiment_fails_with_the_stores_problem_in_spanish(tmp_path):
    facts = Inspection(problem="the MLflow store in the notebook's folder has no experiment 'homework-195'")
    check = graded(facts, rubric_with(tmp_path, CHECK), language="es")["experiment_exists"]
    assert not check.passed and check.points == 0 and "no experiment 'homework-195'" in check.message
    assert check.expected == "un experimento llamado 'homework-195'" and check.hint == "hazlo"
    check = graded(Inspection(), rubric_with(tmp_path, CHECK), language="es")["experiment_exists"]
    assert check.message == "no hay ningún experimento llamado 'homework-195'"
