"""Both ends of the probe: load a student's models and predict the canonical test split, in a process of their own.

Loading a model runs code the student controls (pickles, custom pyfunc classes), so the grader never does it
itself: it starts ``python -m grader.probe --dataset ... --test-size ... --random-state ...`` through the
sandbox in the submission's folder, niced, while the notebook still runs. The probe imports MLflow and splits the
data at once, then waits for one JSON line on stdin: ``{"LABEL": "MODEL_URI", ...}``. For each model it writes,
as one JSON object on stdout, ``{"LABEL": {"ok", "error", "predictions"}}``.

Whatever the models print goes to stderr, so it cannot corrupt that answer; the grader's end (``Probe``) still
validates every number and computes the scores itself from the predictions and its own copy of the test targets,
because a model's code could write to the answer's file descriptor on purpose.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from grader.rubric import Rubric

ERROR_CHARS = 2000
MAX_ANSWER_BYTES = 10_000_000
# Imported before the models exist, while the notebook still runs: the flavors the course teaches and MLflow's
# sqlite stores. A model of another flavor still loads, only without the head start.
WARM_MODULES = (
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "mlflow.xgboost",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)


# The probe's end: runs in the sandbox, in the submission's folder.


def warm_up() -> None:
    import importlib

    for module in WARM_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            continue  # e.g. xgboost not installed: its models cannot load anyway
    from mlflow.store.db.utils import _get_latest_schema_revision

    _get_latest_schema_revision()  # parses the migration scripts once; every store opened later verifies against it


def canonical_split(dataset: str, test_size: float, random_state: int):
    """(X_test, y_test) exactly as the homework's notebook builds them."""
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split

    if dataset != "california_housing":
        raise ValueError(f"unknown dataset {dataset!r}")
    features, target = fetch_california_housing(return_X_y=True, as_frame=True)
    _, x_test, _, y_test = train_test_split(features, target, test_size=test_size, random_state=random_state)
    return x_test, y_test


def predict_with(uri: str, x_test) -> dict:
    import mlflow.pyfunc
    import numpy as np

    try:
        predicted = np.asarray(mlflow.pyfunc.load_model(uri).predict(x_test), dtype=float).reshape(-1)
        if len(predicted) != len(x_test):
            raise ValueError(f"predict returned {len(predicted)} values for {len(x_test)} rows")
        if not np.isfinite(predicted).all():
            raise ValueError("predict returned NaN or infinite values")
    except Exception as error:  # any failure of student code is a finding, not a crash
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:ERROR_CHARS]}
    return {"ok": True, "error": None, "predictions": predicted.tolist()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--test-size", type=float, required=True)
    parser.add_argument("--random-state", type=int, required=True)
    args = parser.parse_args(argv)

    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints from model code, even from C, land on stderr

    warm_up()
    x_test, _ = canonical_split(args.dataset, args.test_size, args.random_state)
    request = json.loads(sys.stdin.readline() or "{}")
    results = {label: predict_with(uri, x_test) for label, uri in request.items()}
    json.dump(results, answer, allow_nan=False)
    answer.close()
    os._exit(0)  # the grader waits for this process to end; tearing down MLflow's imports takes seconds


# The grader's end: runs in the grader's process, trusts nothing the probe writes.


@dataclass
class ModelScore:
    """The probe's answer for one model, validated: either ok with numbers, or an error."""

    ok: bool
    error: str = ""
    rmse: float = math.nan
    r2: float = math.nan
    head: list[float] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)


class Probe:
    """The grader's end of ``python -m grader.probe``: start it early, ask it once, validate its answer."""

    def __init__(self, argv: list[str], workdir: Path, env: dict[str, str], rubric: Rubric):
        split = rubric.split
        self.targets = canonical_targets(split.dataset, split.test_size, split.random_state)
        self.head_rows = split.prediction_rows
        self.seconds = rubric.probe_seconds
        self.launch = {"args": argv, "cwd": workdir, "env": env}
        # Both outside the working directory: the notebook could replace a file there with a link to any file
        # on the machine, which the grader would then write to or quote in the feedback.
        self.answer = tempfile.TemporaryFile()  # noqa: SIM115 (outlives this method)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (outlives this method)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Its imports take seconds of CPU: done while the notebook runs, they cost no wall time."""
        self.process = subprocess.Popen(
            **self.launch,
            stdin=subprocess.PIPE,
            stdout=self.answer,
            stderr=self.log,
            start_new_session=True,
        )

    @staticmethod
    def argv(rubric: Rubric) -> list[str]:
        split = rubric.split
        return [
            sys.executable,
            "-I",  # isolated: the working directory is not on sys.path, so a grader/ handed in there is not run
            "-m",
            "grader.probe",
            "--dataset",
            split.dataset,
            "--test-size",
            str(split.test_size),
            "--random-state",
            str(split.random_state),
        ]

    def ask(self, uris: dict[str, str]) -> dict[str, ModelScore]:
        if not uris:
            self.stop()
            return {}
        try:
            self.process.communicate(json.dumps(uris).encode() + b"\n", timeout=self.seconds)
        except subprocess.TimeoutExpired:
            return {label: ModelScore(False, f"loading and predicting took over {self.seconds} s") for label in uris}
        except BrokenPipeError:
            pass  # it ended before reading the request: its answer (none) says so
        finally:
            self.stop()
        self.answer.seek(0)
        raw = self.answer.read(MAX_ANSWER_BYTES + 1)
        self.answer.close()
        why = f"the probe gave no usable answer (exit code {self.process.returncode}): {self.log_tail()}"
        return parse_answer(raw, list(uris), self.targets, self.head_rows, why)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log_tail(self, chars: int = 600) -> str:
        self.log.seek(max(0, self.log.seek(0, os.SEEK_END) - chars))
        return self.log.read(chars).decode(errors="replace").strip()


@cache
def canonical_targets(dataset: str, test_size: float, random_state: int) -> tuple[float, ...]:
    """The test split's true values, computed in the grader's own process (the kit's data: no student code)."""
    return tuple(float(value) for value in canonical_split(dataset, test_size, random_state)[1])


def parse_answer(
    raw: bytes, labels: list[str], targets: tuple[float, ...], head_rows: int, why_unusable: str
) -> dict[str, ModelScore]:
    """The probe's answer, trusted for nothing: it passed through student code."""
    try:
        answer = json.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return {label: ModelScore(False, why_unusable) for label in labels}
    return {label: _validate(answer.get(label), targets, head_rows) for label in labels}


def _validate(entry: object, targets: tuple[float, ...], head_rows: int) -> ModelScore:
    if not isinstance(entry, dict):
        return ModelScore(False, "the probe's answer for this model is missing or malformed")
    if entry.get("ok") is not True:
        error = entry.get("error")
        return ModelScore(False, error[:2000] if isinstance(error, str) else "loading or predicting failed")
    predictions = entry.get("predictions")
    if not _finite_list(predictions):
        return ModelScore(False, "the probe's answer holds values that are not finite numbers")
    if len(predictions) != len(targets):
        return ModelScore(False, f"expected {len(targets)} predictions, got {len(predictions)}")
    predictions = [float(value) for value in predictions]
    rmse, r2 = _rmse_and_r2(targets, predictions)
    return ModelScore(True, "", rmse, r2, predictions[:head_rows], predictions)


def _rmse_and_r2(targets: tuple[float, ...], predictions: list[float]) -> tuple[float, float]:
    import numpy as np

    truth, predicted = np.asarray(targets), np.asarray(predictions)
    squared_error = float(np.sum((truth - predicted) ** 2))
    return math.sqrt(squared_error / len(truth)), 1.0 - squared_error / float(np.sum((truth - truth.mean()) ** 2))


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite_list(value: object) -> bool:
    return isinstance(value, list) and all(_finite_number(item) for item in value)


if __name__ == "__main__":
    main()
