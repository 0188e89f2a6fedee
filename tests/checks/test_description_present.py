from tests.checks.conftest import MODEL, graded, rubric_with


def test_descriptions_of_the_model_and_a_version(store, tmp_path):
    store.version(store.run(), description="Ridge on data v1: the first champion, rmse 0.74.")
    store.version(store.run(), description="  tbd ")
    store.client.update_registered_model(MODEL, description="ok")
    base = {"kind": "description_present", "model": MODEL}
    rubric = rubric_with(
        tmp_path,
        {**base, "id": "v1", "version": 1},
        {**base, "id": "v2", "version": 2},
        {**base, "id": "model", "min_chars": 3},
    )
    checks = graded(store.read(rubric), rubric)
    assert checks["v1"].passed and checks["v1"].message == "version 1 has a description (40 characters)"
    assert not checks["v2"].passed  # three letters and spaces are a placeholder, not a description
    assert checks["v2"].message == "version 2 has a description of 3 characters; at least 10 are needed"
    assert not checks["model"].passed and "the registered model 'm'" in checks["model"].message
