"""version_tag on a real registry: a semantic version on v1, a tag that does not follow the pattern on v2."""

import pytest

from grader.rubric import RubricError
from tests.checks.conftest import MODEL, graded, rubric_with


def test_a_tag_matching_the_pattern_passes_and_a_wrong_or_missing_one_fails(store, tmp_path):
    first = store.version(store.run(), tags={"semver": "1.0.0"})
    store.version(store.run(), tags={"semver": "latest"})
    store.stage(first, "Production")
    base = {"kind": "version_tag", "model": MODEL, "tag": "semver", "pattern": r"v?\d+\.\d+\.\d+"}
    rubric = rubric_with(
        tmp_path,
        {**base, "id": "v1", "version": 1},
        {**base, "id": "production", "stage": "Production"},
        {**base, "id": "v2", "version": 2},
        {**base, "id": "owner", "version": 2, "tag": "owner"},
        {**base, "id": "v3", "version": 3},
    )
    checks = graded(store.read(rubric), rubric, language="es")
    assert checks["v1"].passed and checks["production"].passed
    assert not checks["v2"].passed
    assert checks["v2"].message == r"la etiqueta semver='latest' de la versión 2 no sigue el patrón v?\d+\.\d+\.\d+"
    assert not checks["owner"].passed and "no tiene la etiqueta 'owner'" in checks["owner"].message
    assert not checks["v3"].passed and checks["v3"].message == "no hay ninguna versión con el número 3"


def test_a_broken_pattern_is_a_rubric_error(tmp_path):
    with pytest.raises(RubricError, match="'pattern' is not a regular expression"):
        rubric_with(tmp_path, {"kind": "version_tag", "model": "m", "version": 1, "tag": "t", "pattern": "("})
