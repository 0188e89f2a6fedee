"""Lesson 07's two rules about model versions: which semantic version comes next, and how two signatures differ.

A semantic version ``MAJOR.MINOR.PATCH`` tells the model's *consumers* what changed, from the lineage of two
consecutive versions (each a mapping with the model's ``signature``, as JSON, and its training data's ``data_md5``,
the md5 DVC wrote in the data's ``.dvc`` file):

* MAJOR: the signature changed (other input columns or types, another output): consumers must change their code;
* MINOR: same signature, retrained on other data: consumers can swap it in;
* PATCH: same signature and same data: a fix (code, dependencies), nothing for consumers to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

FIRST_VERSION = "1.0.0"


def next_semver(previous_semver: str | None, previous: Mapping | None, current: Mapping) -> str:
    """The semantic version of ``current``, given the version before it (``None`` for a model's first version)."""
    if previous_semver is None or previous is None:
        return FIRST_VERSION
    major, minor, patch = (int(part) for part in previous_semver.split("."))
    if current["signature"] != previous["signature"]:
        return f"{major + 1}.0.0"
    if current["data_md5"] != previous["data_md5"]:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def signature_diff(before: str, after: str) -> list[str]:
    """What changed between two signatures (``ModelSignature.to_dict()``, its values as MLflow stores them)."""
    changes = []
    for part in ("inputs", "outputs"):
        old, new = _columns(before, part), _columns(after, part)
        changes += [f"{part}: removed {name} ({old[name]})" for name in old if name not in new]
        changes += [f"{part}: added {name} ({new[name]})" for name in new if name not in old]
        changes += [
            f"{part}: {name} {old[name]} -> {new[name]}" for name in old if name in new and old[name] != new[name]
        ]
    return changes


def _columns(signature: str, part: str) -> dict[str, str]:
    """{column name: type} of a signature's inputs or outputs (an unnamed output is called ``-``)."""
    specs = json.loads(json.loads(signature)[part] or "[]")
    return {spec.get("name", "-"): spec["type"] for spec in specs}
