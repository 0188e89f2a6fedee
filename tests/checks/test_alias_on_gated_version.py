"""alias_on_gated_version on a real registry: the gate's verdict as a version tag, the alias, the grader's numbers."""

from grader import inspect
from grader.probe import ModelScore
from tests.checks.conftest import MODEL, graded, rubric_with

GATED = {"kind": "alias_on_gated_version", "model": MODEL, "alias": "champion", "tag": "gate", "value": "passed"}


def registry(store, second_verdict: str, champion: str) -> None:
    store.version(store.run(), tags={"gate": "passed"})
    store.version(store.run(), tags={"gate": second_verdict})
    store.client.set_registered_model_alias(MODEL, "champion", champion)


def test_the_alias_on_the_newest_passing_version_passes(store, tmp_path):
    registry(store, "failed", "1")  # the challenger failed: the champion stays
    rubric = rubric_with(tmp_path, GATED)
    check = graded(store.read(rubric), rubric)["alias_on_gated_version"]
    assert check.passed and check.message == "@champion points at version 1, the newest with gate='passed'"


def test_an_alias_not_moved_to_a_passing_challenger_or_on_a_failed_one_fails(store, tmp_path):
    registry(store, "passed", "1")
    rubric = rubric_with(tmp_path, GATED)
    check = graded(store.read(rubric), rubric, language="es")["alias_on_gated_version"]
    assert not check.passed and "pero la versión 2 es más reciente" in check.message
    store.client.set_model_version_tag(MODEL, "2", "gate", "failed")
    store.client.set_registered_model_alias(MODEL, "champion", "2")
    check = graded(store.read(rubric), rubric)["alias_on_gated_version"]
    assert not check.passed and "whose tag 'gate' is 'failed', not 'passed'" in check.message


def test_a_verdict_set_by_hand_fails_when_the_graders_numbers_contradict_it(store, tmp_path):
    """The cheapest way to pass is a tag written by hand: with a threshold, the grader re-scores the version."""
    registry(store, "passed", "2")
    rubric = rubric_with(tmp_path, {**GATED, "threshold": 0.65})
    facts = store.read(rubric)
    labels = inspect.models_to_score(facts, store.workdir)
    assert [version.version for version in facts.rescored] == ["2"] and len(labels) == 1
    facts.scores = {facts.rescored[0].model_key: ModelScore(True, "", 0.81, 0.5, [1.0], [1.0])}
    check = graded(facts, rubric)["alias_on_gated_version"]
    assert not check.passed and "rmse=0.8100 does not meet the threshold 0.65" in check.message
    facts.scores[facts.rescored[0].model_key].rmse = 0.6
    assert graded(facts, rubric)["alias_on_gated_version"].passed
