"""Lesson 07's rules: the next semantic version from what changed, and a signature's changes."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from coursekit.lineage import FIRST_VERSION, next_semver, signature_diff


def signature_of(frame: pd.DataFrame) -> str:
    return json.dumps(infer_signature(frame, np.zeros(len(frame))).to_dict())


FEATURES = pd.DataFrame({"MedInc": [1.0, 2.0], "HouseAge": [10.0, 20.0]})
BASE = {"signature": signature_of(FEATURES), "data_md5": "a" * 32}


def test_a_first_version_is_1_0_0():
    assert next_semver(None, None, BASE) == FIRST_VERSION == "1.0.0"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "1.4.3"),  # same data, same signature: a fix
        ({"data_md5": "b" * 32}, "1.5.0"),  # retrained on other data
        ({"signature": signature_of(FEATURES[["MedInc"]])}, "2.0.0"),  # the contract changed
        ({"signature": signature_of(FEATURES[["MedInc"]]), "data_md5": "b" * 32}, "2.0.0"),  # MAJOR wins
    ],
)
def test_the_bump_follows_what_changed(change, expected):
    assert next_semver("1.4.2", BASE, {**BASE, **change}) == expected


def test_a_bump_resets_the_lower_parts():
    assert next_semver("3.7.9", BASE, {**BASE, "data_md5": "c" * 32}) == "3.8.0"
    assert next_semver("3.7.9", BASE, {**BASE, "signature": signature_of(FEATURES[["HouseAge"]])}) == "4.0.0"


def test_a_version_that_is_not_semver_is_refused():
    with pytest.raises(ValueError):
        next_semver("v2", BASE, BASE)


def test_signature_diff_names_removed_added_and_retyped_columns():
    retyped = FEATURES.assign(HouseAge=FEATURES["HouseAge"].astype("float32"), Rooms=[3.0, 4.0])
    assert signature_diff(signature_of(FEATURES), signature_of(retyped.drop(columns="MedInc"))) == [
        "inputs: removed MedInc (double)",
        "inputs: added Rooms (double)",
        "inputs: HouseAge double -> float",
    ]


def test_signature_diff_of_identical_signatures_is_empty():
    assert signature_diff(BASE["signature"], signature_of(FEATURES.copy())) == []
