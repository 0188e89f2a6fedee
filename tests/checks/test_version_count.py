from tests.checks.conftest import MODEL, graded, rubric_with


def test_the_number_of_versions_must_be_within_bounds(store, tmp_path):
    for _ in range(3):
        store.version(store.run())
    base = {"kind": "version_count", "model": MODEL}
    rubric = rubric_with(
        tmp_path,
        {**base, "id": "at_least_two", "min_versions": 2},
        {**base, "id": "exactly_two", "min_versions": 2, "max_versions": 2},
    )
    checks = graded(store.read(rubric), rubric)
    assert checks["at_least_two"].passed
    assert not checks["exactly_two"].passed
    assert checks["exactly_two"].message == (
        "'m' has 3 versions (v1 (None), v2 (None), v3 (None)); exactly 2 are needed"
    )


def test_no_registered_model_fails(store, tmp_path):
    rubric = rubric_with(tmp_path, {"kind": "version_count", "model": MODEL, "min_versions": 1})
    check = graded(store.read(rubric), rubric, language="es")["version_count"]
    assert not check.passed and check.message == "no hay ningún modelo registrado con el nombre 'm'"
