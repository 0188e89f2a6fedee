"""Attacks from the red team of the check kinds (/work/helpers/redteam.md), each on a small real store or rubric."""

from __future__ import annotations

import os
import sqlite3

import pytest

from grader import inspect
from grader.rubric import RubricError
from tests.checks.conftest import EXPERIMENT, MODEL, graded, rubric_with

ARTIFACT = {"kind": "artifact_present", "experiment": EXPERIMENT, "path": "drift/report.csv"}


def test_runs_sharing_one_artifact_folder_do_not_share_its_files(store, tmp_path):
    """UPDATE runs SET artifact_uri = <one run's folder>: the one report must not count for every run."""
    first = store.run("honest")
    store.artifact(first, "drift/report.csv", b"p_holm," * 30)
    others = [store.run(f"copy-{index}") for index in range(3)]
    with sqlite3.connect(store.workdir / "mlflow.db") as connection:
        connection.execute("UPDATE runs SET artifact_uri = ?", (store.client.get_run(first).info.artifact_uri,))
    connection.close()
    rubric = rubric_with(tmp_path, {**ARTIFACT, "id": "every"}, {**ARTIFACT, "id": "any", "on": "any_run"})
    checks = graded(store.read(rubric), rubric)
    assert not checks["every"].passed and "also run" in checks["every"].message, checks["every"].message
    assert not checks["any"].passed  # every run claims the same folder: none of them owns it
    assert others


def test_a_tree_of_empty_folders_costs_the_listing_budget(store, tmp_path, monkeypatch):
    """Folders count, not only files: a trap of empty folders is cut at the budget, not walked to the deadline."""
    run_id = store.run("trap")
    folder = store.artifact(run_id, "keep", b"").parent
    for index in range(30):
        (folder / f"empty-{index:02d}" / "deeper").mkdir(parents=True)
    store.artifact(store.run("honest"), "drift/report.csv", b"feature,p_holm\n" * 10)
    monkeypatch.setattr(inspect, "MAX_LISTED_ARTIFACTS", 20)
    rubric = rubric_with(tmp_path, {**ARTIFACT, "on": "any_run"})
    facts = store.read(rubric)
    trapped = next(run for run in facts.runs if run.name == "trap")
    assert trapped.artifacts is None and "more than 20 artifacts" in trapped.artifact_problem


def test_every_run_with_contains_reads_every_runs_file(store, tmp_path):
    """25 honest runs, each with its report: the read budget must not fail the last ones."""
    for index in range(25):
        store.artifact(store.run(f"run-{index}"), "drift/report.csv", b"feature,p_holm\n" + b"x,0.5\n" * 30)
    rubric = rubric_with(tmp_path, {**ARTIFACT, "contains": "p_holm"})
    check = graded(store.read(rubric), rubric)["artifact_present"]
    assert check.passed, check.message


def test_an_undecodable_file_name_is_shown_escaped(store, tmp_path):
    run_id = store.run("bytes")
    folder = store.artifact(run_id, "keep", b"").parent
    with open(os.fsencode(folder) + b"/drift\xff<b>.csv", "wb") as stream:
        stream.write(b"x")
    rubric = rubric_with(tmp_path, ARTIFACT)
    check = graded(store.read(rubric), rubric)["artifact_present"]
    assert "drift\\xff<b>.csv" in check.message
    check.message.encode()  # no lone surrogate left: the feedback page can be written


def test_zero_width_characters_are_not_a_description(store, tmp_path):
    store.version(store.run(), description="\u200b\u2060\ufeff" * 5)
    store.client.update_registered_model(MODEL, "\u200b" * 12)
    rubric = rubric_with(
        tmp_path,
        {"kind": "description_present", "model": MODEL, "id": "model_text"},
        {"kind": "description_present", "model": MODEL, "version": 1, "id": "version_text"},
    )
    checks = graded(store.read(rubric), rubric)
    assert not checks["model_text"].passed and not checks["version_text"].passed


@pytest.mark.parametrize(
    ("check", "error"),
    [
        ({"kind": "version_tag", "model": MODEL, "version": 1, "tag": "t", "pattern": r"(\w+\s?)+"}, "exponential"),
        ({"kind": "version_tag", "model": MODEL, "version": 1, "tag": "t", "pattern": "(a|ab)*c"}, "exponential"),
        ({"kind": "version_tag", "model": MODEL, "version": 1, "tag": "t", "pattern": ""}, "must not be empty"),
        ({"kind": "version_tag", "model": MODEL, "version": 0, "tag": "t"}, "1 or more"),
        ({"kind": "version_tag", "model": MODEL, "version": 1, "tag": ""}, "'tag' must not be empty"),
        (
            {
                "kind": "alias_on_gated_version",
                "model": MODEL,
                "alias": "a",
                "tag": "g",
                "value": "ok",
                "threshold": float("inf"),
            },
            "finite",
        ),
        (
            {
                "kind": "metrics_honest",
                "experiment": EXPERIMENT,
                "metric": "rmse",
                "model": MODEL,
                "alias": "a",
                "tolerance": -1.0,
            },
            "must not be negative",
        ),
        (
            {"kind": "dataset_input", "experiment": EXPERIMENT, "context": "training", "digests": []},
            "must be a list of names",
        ),
        ({**ARTIFACT, "path": "../elsewhere/*.csv"}, "inside the run's artifact folder"),
        ({**ARTIFACT, "path": "/etc/passwd"}, "inside the run's artifact folder"),
    ],
)
def test_rubric_values_that_pass_everything_or_nothing_are_refused(tmp_path, check, error):
    with pytest.raises(RubricError, match=error):
        rubric_with(tmp_path, check)


def test_safe_patterns_still_load(tmp_path):
    for pattern in (r"v?1\.0\.0", "passed|failed", r"[0-9a-f]{40}", r"v?\d+\.\d+\.\d+", ".+"):
        rubric_with(tmp_path, {"kind": "version_tag", "model": MODEL, "version": 1, "tag": "t", "pattern": pattern})


def test_a_long_tag_value_is_matched_only_by_the_default_pattern(store, tmp_path):
    store.version(store.run(), tags={"note": "a" * 400})
    check = {"kind": "version_tag", "model": MODEL, "version": 1, "tag": "note"}
    rubric = rubric_with(tmp_path, {**check, "id": "any"}, {**check, "id": "letters", "pattern": "a+"})
    checks = graded(store.read(rubric), rubric)
    assert checks["any"].passed and not checks["letters"].passed
