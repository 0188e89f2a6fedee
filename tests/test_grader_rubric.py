"""The rubric loader accepts the homework's rubric and refuses a bad one with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.rubric import CHECK_IDS, RubricError, load

RUBRIC = Path(__file__).resolve().parents[1] / "homework" / "homework-195.rubric.toml"


def test_homework_rubric_loads_with_every_rule():
    rubric = load(RUBRIC)
    assert rubric.experiment == "homework-195"
    assert rubric.min_runs == 10
    assert rubric.registered_model == "housing-best"
    assert rubric.production_uri == "models:/housing-best/Production"
    assert (rubric.split.dataset, rubric.split.test_size, rubric.split.random_state) == ("california_housing", 0.2, 42)
    assert set(rubric.points) == set(CHECK_IDS)
    assert rubric.max_score == sum(rubric.points.values())
    assert rubric.limits.cell_seconds <= rubric.limits.wall_seconds


def rewritten(tmp_path: Path, old: str, new: str) -> Path:
    text = RUBRIC.read_text()
    assert old in text, f"fixture out of date: {old!r} is not in the rubric"
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_alias_option_loads_models_by_alias(tmp_path):
    rubric = load(rewritten(tmp_path, '\nby = "stage"', '\nby = "alias"'))
    assert rubric.production_uri == "models:/housing-best@champion"
    assert rubric.production_label == "alias 'champion'"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("min_runs = 10", "", "'min_runs' is missing"),
        ("min_runs = 10", 'min_runs = "ten"', "'min_runs' must be an integer, not 'ten'"),
        ("min_runs = 10", "min_runs = true", "'min_runs' must be an integer, not True"),
        ("min_runs = 10", "min_runs = 0", "'min_runs' must be positive"),
        ("metrics_honest = 0", "metrics_honest = 0\nhonesty = 3", "names unknown checks ['honesty']"),
        ("runs = 2", "runs = -2", "'points.runs' must not be negative"),
        ('\nby = "stage"', '\nby = "tag"', "'production.by' must be 'stage' or 'alias'"),
        ('dataset = "california_housing"', 'dataset = "iris"', "'data.dataset' must be one of"),
        ("test_size = 0.2", "test_size = 1.5", "'data.test_size' must be a fraction below 1"),
        ('rank_by = "rmse_test"', 'rank_by = "mae_test"', "'run_fields.rank_by' must be one of run_fields.metrics"),
        ('param_or_tag = ["model_type"]', "param_or_tag = []", "'run_fields.param_or_tag' must be a non-empty list"),
        ("[limits]", "[limits\n", "not valid TOML"),
    ],
)
def test_bad_rubric_is_refused_with_a_clear_message(tmp_path, old, new, message):
    path = rewritten(tmp_path, old, new)
    with pytest.raises(RubricError) as raised:
        load(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_missing_rubric_file_is_a_rubric_error(tmp_path):
    with pytest.raises(RubricError, match="cannot be read"):
        load(tmp_path / "nowhere.toml")


def test_cli_reports_a_bad_rubric_and_stops(tmp_path, capsys):
    from grader.__main__ import main

    bad = rewritten(tmp_path, "min_runs = 10", "")
    assert main(["grade", str(tmp_path), "--rubric", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "'min_runs' is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
