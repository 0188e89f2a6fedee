from grader.inspect import VersionFacts
from tests.checks.conftest import graded, rubric_with
from tests.test_grader_score import good_facts


def test_a_version_in_the_stage_or_with_the_alias_passes(tmp_path):
    facts = good_facts()
    facts.versions.append(VersionFacts("2", facts.runs[1].run_id, "None", ["champion"], "/work/x"))
    stage = {"kind": "registered_version", "model": "housing-best", "stage": "Production"}
    alias = {"kind": "registered_version", "model": "housing-best", "alias": "champion"}
    assert graded(facts, rubric_with(tmp_path, stage))["registered_version"].message.startswith(
        "version 1 is in stage 'Production'"
    )
    check = graded(facts, rubric_with(tmp_path, alias))["registered_version"]
    assert check.passed and check.message.startswith("version 2 is the one with alias 'champion'")


def test_no_version_with_the_alias_fails_in_spanish(tmp_path):
    alias = {"kind": "registered_version", "model": "housing-best", "alias": "champion"}
    check = graded(good_facts(), rubric_with(tmp_path, alias), language="es")["registered_version"]
    assert not check.passed
    assert (
        check.message == "'housing-best' no tiene ninguna versión con el alias 'champion'; versiones: v1 (Production)"
    )
