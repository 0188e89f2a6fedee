import pytest

from grader.rubric import RubricError
from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts, run


def test_enough_runs_pass_and_too_few_or_too_many_fail(tmp_path):
    ten = good_facts()
    nine = good_facts(runs=[run(number, 0.5 + number / 100) for number in range(9)])
    at_least = rubric_with(tmp_path, {"kind": "run_count", "experiment": "homework-195", "min_runs": 10})
    assert graded(ten, at_least)["run_count"].passed
    check = graded(nine, at_least)["run_count"]
    assert not check.passed and check.message == "found 9 runs; at least 10 are needed"
    exactly = rubric_with(tmp_path, {"kind": "run_count", "experiment": "homework-195", "min_runs": 9, "max_runs": 9})
    assert graded(nine, exactly)["run_count"].passed
    check = graded(ten, exactly, language="es")["run_count"]
    assert not check.passed and check.message == "hay 10 ejecuciones; se necesitan exactamente 9"


def test_a_maximum_below_the_minimum_is_a_rubric_error(tmp_path):
    with pytest.raises(RubricError, match="'max_runs' must be at least 'min_runs' \\(3\\), not 2"):
        rubric_with(tmp_path, {"kind": "run_count", "experiment": "x", "min_runs": 3, "max_runs": 2})
