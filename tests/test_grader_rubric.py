"""The rubric loader accepts the homework's rubric and refuses a bad one with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.rubric import RubricError, load

RUBRIC = Path(__file__).resolve().parents[1] / "homework" / "homework-195.rubric.toml"


def test_homework_rubric_loads_with_every_rule():
    rubric = load(RUBRIC)
    assert rubric.experiment == "homework-195"
    assert rubric.min_runs == 10
    assert rubric.registered_model == "housing-best"
    assert rubric.production_uri == "models:/housing-best/Production"
    assert (rubric.split.dataset, rubric.split.test_size, rubric.split.random_state) == ("california_housing", 0.2, 42)
    assert list(rubric.points) == list(rubric.check_ids) == [check.id for check in rubric.checks]
    assert rubric.rank_by == "rmse_test" and rubric.metrics == ("rmse_test", "r2_test")
    assert rubric.max_score == sum(rubric.points.values())
    assert rubric.limits.cell_seconds <= rubric.limits.wall_seconds


def rewritten(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = RUBRIC.read_text()
    assert old in text, f"fixture out of date: {old!r} is not in the rubric"
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(old, new, count))
    return path


def test_alias_option_loads_models_by_alias(tmp_path):
    rubric = load(rewritten(tmp_path, 'stage = "Production"', 'alias = "champion"', -1))
    assert rubric.production_uri == "models:/housing-best@champion"
    assert rubric.production_label == "alias 'champion'"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("min_runs = 10", "", "check 'runs': (run_count) 'min_runs' is missing; its parameters are: experiment"),
        ("min_runs = 10", 'min_runs = "ten"', "'min_runs' must be an integer, not 'ten'"),
        ("min_runs = 10", "min_runs = true", "'min_runs' must be an integer, not True"),
        ("min_runs = 10", "min_runs = 0", "'min_runs' must be positive"),
        ("min_runs = 10", "min_runs = 10\nminimum = 3", "unknown parameter 'minimum'; its parameters are: experiment"),
        ('kind = "run_count"', 'kind = "run_total"', "check 'runs': unknown kind 'run_total'; the kinds are"),
        ('id = "run_fields"', 'id = "runs"', "has the id 'runs' twice"),
        ('id = "runs"', 'id = "Runs!"', "'checks[1].id' must be a name"),
        ("points = 2", "points = -2", "check 'runs': 'points' must not be negative"),
        ("max_score = 16", "max_score = 17", "'max_score' is 17, but the checks' points add up to 16"),
        ('language = "en"', 'language = "fr"', "'language' must be one of ['en', 'es']"),
        ('stage = "Production"', 'stage = "Production"\nalias = "champion"', "gives 'stage', 'alias': it selects one"),
        (
            'stage = "Production"',
            'stage = "production"',
            "'stage' must be one of ['Staging', 'Production', 'Archived']",
        ),
        ('stage = "Production"\nhint', "hint", "check 'registered': (registered_version) selects no version"),
        (
            'metric = "rmse_test"',
            "metric = 3",
            "check 'best_is_production': (best_run_is_served) 'metric' must be a string",
        ),
        ('direction = "min"', 'direction = "down"', "'direction' must be one of 'min', 'max', not 'down'"),
        ('params_or_tags = ["model_type"]\nmetrics = ["rmse_test", "r2_test"]', "", "names no field"),
        ('params_or_tags = ["model_type"]', 'params_or_tags = [""]', "'params_or_tags' must be a list of names"),
        ('experiment = "homework-195"\nmin_runs', 'experiment = "hw"\nmin_runs', "name several experiments"),
        (
            'model = "housing-best"\nstage = "Production"\nrows',
            'model = "housing-best"\nalias = "a"\nrows',
            "select several served versions",
        ),
        ('dataset = "california_housing"', 'dataset = "iris"', "'data.dataset' must be one of"),
        ("test_size = 0.2", "test_size = 1.5", "'data.test_size' must be a fraction below 1"),
        ("[limits]", "[limits\n", "not valid TOML"),
    ],
)
def test_bad_rubric_is_refused_with_a_clear_message(tmp_path, old, new, message):
    path = rewritten(tmp_path, old, new)
    with pytest.raises(RubricError) as raised:
        load(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_hint_in_the_rubrics_language_is_required(tmp_path):
    path = rewritten(tmp_path, 'language = "en"', 'language = "es"')
    text = path.read_text()
    first_spanish_hint = next(line for line in text.splitlines() if line.startswith("hint_es ="))
    path.write_text(text.replace(first_spanish_hint, ""))
    with pytest.raises(RubricError, match="check 'experiment': 'hint_es' is missing: the rubric's language is 'es'"):
        load(path)


def test_missing_rubric_file_is_a_rubric_error(tmp_path):
    with pytest.raises(RubricError, match="cannot be read"):
        load(tmp_path / "nowhere.toml")


def test_cli_reports_a_bad_rubric_and_stops(tmp_path, capsys):
    from grader.__main__ import main

    bad = rewritten(tmp_path, "min_runs = 10", "")
    assert main(["grade", str(tmp_path), "--rubric", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "'min_runs' is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
