from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts, run

CHECK = {"kind": "run_fields", "experiment": "homework-195", "params_or_tags": ["model_type"], "metrics": ["r2_test"]}


def test_every_run_with_its_fields_passes(tmp_path):
    assert graded(good_facts(), rubric_with(tmp_path, CHECK))["run_fields"].passed


def test_a_run_lacking_a_field_fails_and_is_named(tmp_path):
    runs = [run(number, 0.5 + number / 100) for number in range(10)]
    runs[4] = run(4, 0.54, missing=["r2_test"], metrics={"rmse_test": 0.54})
    check = graded(good_facts(runs=runs), rubric_with(tmp_path, CHECK), language="es")["run_fields"]
    assert not check.passed
    named = f"a la ejecución {runs[4].run_id[:8]} (run-4, ridge) le falta 'r2_test'"
    assert check.message == f"a 1 de 10 ejecuciones les faltan campos: {named}"


def test_a_field_another_check_requires_is_not_this_checks_business(tmp_path):
    runs = [run(number, 0.5 + number / 100, missing=["rmse_test"]) for number in range(10)]
    assert graded(good_facts(runs=runs), rubric_with(tmp_path, CHECK))["run_fields"].passed
