"""dataset_input on a real store: a pandas dataset logged with mlflow.log_input, and runs that fake or skip one."""

import pytest

from grader.rubric import RubricError
from tests.checks.conftest import EXPERIMENT, MODEL, graded, rubric_with


def log_input(store, run_id: str, frame, context: str, digest: str | None = None) -> str:
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = mlflow.data.from_pandas(frame, name="train")._to_mlflow_entity()
    if digest is not None:  # what a notebook writing its own Dataset entity can claim
        dataset = Dataset(dataset.name, digest, dataset.source_type, dataset.source, dataset.schema, dataset.profile)
    store.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])
    return dataset.digest


def test_inputs_with_the_canonical_digest_pass_and_a_fake_digest_or_none_fails(store, tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})
    honest = store.run("honest")
    digest = log_input(store, honest, frame, "training")
    faked = store.run("faked")
    log_input(store, faked, frame.head(1), "training", digest="0123abcd")
    store.run("nothing")
    store.version(honest)
    base = {"kind": "dataset_input", "experiment": EXPERIMENT, "context": "training"}
    rubric = rubric_with(
        tmp_path,
        {**base, "id": "any_digest", "on": "any_run"},
        {**base, "id": "canonical", "on": "every_run", "digests": [digest]},
        {**base, "id": "served", "on": "served_run", "model": MODEL, "version": 1, "digests": [digest]},
        {**base, "id": "validation", "on": "any_run", "context": "validation"},
    )
    checks = graded(store.read(rubric), rubric)
    assert checks["any_digest"].passed
    assert checks["served"].passed, checks["served"].message
    assert not checks["canonical"].passed and "2 of 3 runs have no fitting dataset input" in checks["canonical"].message
    assert "digest '0123abcd'" in checks["canonical"].message and "no dataset input" in checks["canonical"].message
    assert not checks["validation"].passed
    spanish = graded(store.read(rubric), rubric, language="es")["canonical"]
    assert "2 de 3 ejecuciones no tienen un conjunto de datos de entrada adecuado" in spanish.message


def test_a_model_is_only_for_the_served_run(tmp_path):
    with pytest.raises(RubricError, match="are for on = 'served_run' only"):
        rubric_with(tmp_path, {"kind": "dataset_input", "experiment": "x", "context": "training", "model": "m"})
    with pytest.raises(RubricError, match="with on = 'served_run' give 'model'"):
        rubric_with(tmp_path, {"kind": "dataset_input", "experiment": "x", "context": "training", "on": "served_run"})
