"""Continuous training (lesson 08) as a script a scheduler can run: drift → retrain → gate → promote.

    python -m coursekit.ct bootstrap              # once per store: the first champion, trained on the reference period
    python -m coursekit.ct run --batch drifted    # each time a labelled batch lands (cron, CI, Airflow…)
    python -m coursekit.ct rollback --reason "…"  # put the previous champion back, in one call
    python -m coursekit.ct status                 # the champion, every version, and the audit trail

It logs to MLflow's usual store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the current folder.
A ``run`` compares the batch with the data the champion (``@champion``, also in the ``Production`` stage) was
trained on: a two-sample Kolmogorov–Smirnov test per feature, Holm-corrected for testing eight features at once. No
drift: stop. Drift: train a challenger on the champion's data plus the batch's training part, evaluate champion and
challenger on the batch's held-out part with ``mlflow.models.evaluate``, and gate with
``mlflow.validate_evaluation_results``: an absolute RMSE ceiling, an R² floor and a minimum relative improvement
over the champion. Only a challenger that passes is promoted; the gate's numbers, the reason, who and when are
written on the version (tags, and a line appended to its description).

Safe to re-run. Every processed (model, champion version, batch) is recorded as a finished run of the experiment,
tagged with its decision, and a batch is never processed twice against the same champion; a champion trained on the
batch already has nothing to learn from it. A second run therefore changes nothing and says so, and a rollback
sticks: the loop does not re-promote a model that a person took out of service (``--force`` reprocesses on purpose).
A run that crashed is not recorded as processed, so the next run does it again (it may register one more version).
Two loops must not run at the same time on one model: the scheduler serialises them (the sample GitHub workflow
does, with ``concurrency``).

Exit status: 0 when the loop did its job (promoted, no drift, nothing to do, rolled back); 3 when drift was found
but the challenger failed the gate (the champion is untouched, and someone should look); 1 on an error.

Lesson 08 builds each step by hand, then tours this file. The data are California Housing cut into periods by one
documented rule (``load_batch``); a real deployment would read its batches from a warehouse in that one function.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import MetricThreshold, infer_signature
from mlflow.models.evaluation.validation import ModelValidationFailedException
from scipy.stats import ks_2samp
from sklearn.datasets import fetch_california_housing
from sklearn.ensemble import RandomForestRegressor

MODEL_NAME = "housing-ct"
EXPERIMENT = "continuous-training"
CHAMPION, CHALLENGER = "champion", "challenger"
FEATURES = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"]
TARGET = "MedHouseVal"  # median house value of the block group, in $100,000

# The documented drift rule: the business starts north of this latitude and then expands south of it (Los Angeles,
# San Diego). Each period is a fixed share of its region's districts, picked by a hash of the row id (see bucket).
SOUTH_OF_LATITUDE = 35.0
BATCHES = {
    "reference": f"80% of the districts at or north of {SOUTH_OF_LATITUDE}°N: the period the first champion learns",
    "stable": f"the other 20% of the districts at or north of {SOUTH_OF_LATITUDE}°N: same population, no drift",
    "drifted": f"half of the districts south of {SOUTH_OF_LATITUDE}°N: the market the business expands into",
    "live": f"the other half of the districts south of {SOUTH_OF_LATITUDE}°N: requests after the expansion",
}
HOLDOUT_PERCENT = 30  # share of every batch kept out of training, for the gate

MODEL_PARAMS = {"n_estimators": 25, "max_depth": 10, "min_samples_leaf": 5, "random_state": 42}
PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}"]  # stated: inferring them costs ~5 s per model
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]  # skops refuses a forest's trees unless this type is trusted
# SHAP is not installed in the kit: without this, evaluate logs "WARNING … SHAP or matplotlib package is not
# installed" and skips the explainability plots anyway. The gate needs the metrics only.
EVALUATOR_CONFIG = {"log_model_explainability": False}

EXIT_OK, EXIT_ERROR, EXIT_REJECTED = 0, 1, 3
DESCRIPTION_LIMIT = 5000


class LoopError(RuntimeError):
    """The loop cannot go on; the message says why and what to do."""


# --- data: the periods of the course, and a split that does not depend on row order -----------------------------


def bucket(ids, salt: str) -> np.ndarray:
    """A number from 0 to 99 per id, from SHA-256 of ``"salt:id"``.

    The same on every machine and in every process (Python's ``hash()`` of a string is salted per process), the same
    whatever the order of the rows, and independent from one salt to another."""
    return np.array([int.from_bytes(hashlib.sha256(f"{salt}:{i}".encode()).digest()[:8], "big") % 100 for i in ids])


@functools.cache
def _california() -> pd.DataFrame:
    frame = fetch_california_housing(as_frame=True).frame
    frame.index.name = "row_id"  # the row's position in scikit-learn's data set: a stable id
    return frame


def load_batch(name: str) -> pd.DataFrame:
    """The rows of one period (``BATCHES`` says which): the 8 features and the target, indexed by ``row_id``."""
    if name not in BATCHES:
        raise LoopError(f"unknown batch {name!r}: choose one of {', '.join(BATCHES)}")
    frame = _california()
    south = (frame["Latitude"] < SOUTH_OF_LATITUDE).to_numpy()
    period = bucket(frame.index, "period")
    rows = {
        "reference": ~south & (period < 80),
        "stable": ~south & (period >= 80),
        "drifted": south & (period < 50),
        "live": south & (period >= 50),
    }[name]
    return frame[rows].copy()


def split(frame: pd.DataFrame, holdout_percent: int = HOLDOUT_PERCENT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training part, held-out part) of a batch, by a hash of the row id."""
    held_out = bucket(frame.index, "holdout") < holdout_percent
    return frame[~held_out], frame[held_out]


def canary_arm(request_ids, percent: int = 10) -> np.ndarray:
    """``"challenger"`` for ``percent``% of request ids, ``"champion"`` for the rest; always the same for one id."""
    return np.where(bucket(request_ids, "canary") < percent, CHALLENGER, CHAMPION)


def training_frame(batches: list[str]) -> pd.DataFrame:
    """The training parts of these batches, together: what a model trained on ``"+".join(batches)`` learnt."""
    return pd.concat([split(load_batch(name))[0] for name in batches])


def fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of exactly these rows (values and row ids)."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame).to_numpy().tobytes()).hexdigest()[:12]


# --- drift: one KS test per feature, Holm's correction for testing several at once ------------------------------


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values: reject where adjusted < alpha, with a family-wise error rate ≤ alpha."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    scaled = (len(p) - np.arange(len(p))) * p[order]  # smallest p times m, the next times m - 1, …
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))  # adjusted p-values never decrease
    return adjusted


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per feature: KS statistic (largest gap between the two ECDFs), p-value, Holm-adjusted p-value, drifted."""
    tests = {feature: ks_2samp(reference[feature], current[feature]) for feature in FEATURES}
    report = pd.DataFrame(
        {
            "ks_statistic": [test.statistic for test in tests.values()],
            "p_value": [test.pvalue for test in tests.values()],
        },
        index=pd.Index(FEATURES, name="feature"),
    )
    report["p_holm"] = holm(report["p_value"])
    report["drifted"] = report["p_holm"] < alpha
    return report


# --- models: train, register, evaluate, gate -------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """What a challenger must reach on the held-out rows of the new batch (RMSE and R² in the target's units)."""

    max_rmse: float = 0.75  # absolute ceiling: $75,000
    min_r2: float = 0.6  # absolute floor
    min_improvement: float = 0.05  # RMSE at least 5% lower than the champion's on the same rows

    def thresholds(self, with_baseline: bool = True) -> dict[str, MetricThreshold]:
        # Without a baseline (the first champion), a min_relative_change would fail as "missing from the baseline".
        rmse = {"min_relative_change": float(self.min_improvement)} if with_baseline else {}
        return {
            "root_mean_squared_error": MetricThreshold(threshold=float(self.max_rmse), greater_is_better=False, **rmse),
            "r2_score": MetricThreshold(threshold=float(self.min_r2), greater_is_better=True),
        }


def train_and_register(client, model_name, batches, experiment_id, *, for_batch, base_version) -> ModelVersion:
    """Fit a forest on the training parts of ``batches``, log it in its own run and register a new version."""
    frame = training_frame(batches)
    estimator = RandomForestRegressor(**MODEL_PARAMS).fit(frame[FEATURES], frame[TARGET])
    name = "+".join(batches)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train on {name}", nested=_in_run()):
        mlflow.log_params({**MODEL_PARAMS, "training_rows": len(frame)})
        mlflow.log_input(mlflow.data.from_pandas(frame, name=name, targets=TARGET), context="training")
        head = frame[FEATURES].head()
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(head, estimator.predict(head)),
            pip_requirements=PIP_REQUIREMENTS,
            skops_trusted_types=TRUSTED_TYPES,
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    tags = {
        "training_data": name,
        "training_digest": fingerprint(frame),
        "trained_for_batch": for_batch,
        "base_version": base_version or "none",
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return client.get_model_version(model_name, version)


def evaluate_version(model_name, version, holdout, experiment_id):
    """``mlflow.models.evaluate`` of one registered version (an immutable URI) on ``holdout``, in its own run."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate v{version}", nested=_in_run()):
        return mlflow.models.evaluate(
            f"models:/{model_name}/{version}",
            holdout[[*FEATURES, TARGET]],
            targets=TARGET,
            model_type="regressor",
            evaluators="default",
            evaluator_config=EVALUATOR_CONFIG,
        )


def check_gate(thresholds, candidate, baseline=None) -> tuple[bool, str]:
    """(passed, why): ``mlflow.validate_evaluation_results`` raises when a threshold is missed, and says which."""
    try:
        mlflow.validate_evaluation_results(thresholds, candidate, baseline)
    except ModelValidationFailedException as failure:
        return False, failure.message
    return True, "every threshold met"


def gate_numbers(thresholds, candidate, baseline=None, baseline_version=None) -> dict[str, str]:
    """The gate's inputs and the metrics it compared, as version tags."""
    numbers = {f"gate.{name}": f"{candidate.metrics[name]:.4f}" for name in thresholds}
    if baseline is not None:
        numbers |= {f"gate.baseline.{name}": f"{baseline.metrics[name]:.4f}" for name in thresholds}
        numbers["gate.baseline_version"] = str(baseline_version)
    numbers["gate.thresholds"] = "; ".join(f"{name}: {threshold}" for name, threshold in thresholds.items())
    numbers["gate.rows"] = str(int(candidate.metrics["example_count"]))
    return numbers


# --- the registry: promote, reject, roll back, and the trail they leave -----------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(client, model_name, version, event, actor, reason, extra=None) -> None:
    """``EVENT.by/at/reason`` tags (the latest of each event) and a line appended to the description (all of them)."""
    when = _now()
    for key, value in {f"{event}.by": actor, f"{event}.at": when, f"{event}.reason": reason, **(extra or {})}.items():
        client.set_model_version_tag(model_name, version, key, value)
    old = client.get_model_version(model_name, version).description or ""
    text = f"{old}\n[{when}] {event} by {actor}: {reason}".strip()
    # A version's description holds at most 5,000 characters in MLflow's SQL store: keep the newest lines.
    client.update_model_version(model_name, version, description=text[-DESCRIPTION_LIMIT:])


def _set_production(client, model_name, version) -> None:
    # The course keeps the Production stage in step with @champion (the homework and older code read the stage).
    # MLflow deprecates stages and warns at each transition; lesson 04 explains it, so the loop does not repeat it.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*transition_model_version_stage`` is deprecated", category=FutureWarning
        )
        client.transition_model_version_stage(model_name, version, "Production", archive_existing_versions=True)


def champion_or_none(client, model_name) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None


def promote(client, model_name, version, *, actor, reason, extra=None) -> str | None:
    """Make ``version`` the champion: ``@champion``, ``Production`` (archiving the old one); return the old one."""
    previous = champion_or_none(client, model_name)
    previous_version = str(previous.version) if previous else None
    _set_production(client, model_name, version)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    if str(client.get_registered_model(model_name).aliases.get(CHALLENGER)) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER)
    extra = {**(extra or {}), "previous_champion": previous_version or "none"}
    _record(client, model_name, version, "promoted", actor, reason, extra)
    return previous_version


def reject(client, model_name, version, *, actor, reason, extra=None) -> None:
    """Record why ``version`` stays out; ``@champion`` and ``Production`` do not move."""
    if str(client.get_registered_model(model_name).aliases.get(CHALLENGER)) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER)
    _record(client, model_name, version, "rejected", actor, reason, extra)


def rollback(client, model_name, *, actor, reason, to_version=None, from_version=None) -> Outcome:
    """Put the champion's predecessor (or ``to_version``) back as ``@champion`` and in ``Production``, in one call.

    ``from_version`` makes it safe to retry: if the champion is no longer that version, nothing happens."""
    current = champion_or_none(client, model_name)
    if current is None:
        raise LoopError(f"{model_name} has no @{CHAMPION}: nothing to roll back")
    current_version = str(current.version)
    if from_version is not None and str(from_version) != current_version:
        return Outcome("nothing_to_do", f"the champion is v{current_version}, not v{from_version}: nothing changed")
    target = str(to_version or current.tags.get("previous_champion", "none"))
    if target == "none":
        raise LoopError(f"v{current_version} replaced no earlier champion: name one with --to-version")
    if target == current_version:
        return Outcome("nothing_to_do", f"v{target} is the champion already: nothing changed")
    _set_production(client, model_name, target)
    client.set_registered_model_alias(model_name, CHAMPION, target)
    _record(client, model_name, current_version, "rolled_back", actor, reason, {"replaced_by": target})
    _record(client, model_name, target, "restored", actor, reason, {"replacing": current_version})
    return Outcome(
        "rolled_back",
        f"rolled back: v{target} is @{CHAMPION} and in Production again (v{current_version} archived)",
        champion=target,
    )


def audit_trail(client, model_name) -> pd.DataFrame:
    """Every promotion, rejection, rollback and restore recorded on the versions: who, when, why, in time order."""
    rows = []
    for version in client.search_model_versions(f"name = '{model_name}'"):
        for event in ("promoted", "rejected", "rolled_back", "restored"):
            if f"{event}.at" in version.tags:
                rows.append(
                    {
                        "when": version.tags[f"{event}.at"],
                        "version": int(version.version),
                        "event": event,
                        "who": version.tags[f"{event}.by"],
                        "why": version.tags[f"{event}.reason"],
                    }
                )
    trail = pd.DataFrame(rows, columns=["when", "version", "event", "who", "why"])
    # Events of one call share a second: list them in the order they happen (a demotion before the restore).
    trail["order"] = trail["event"].map({"rejected": 0, "promoted": 1, "rolled_back": 2, "restored": 3})
    return trail.sort_values(["when", "order"]).drop(columns="order").reset_index(drop=True)


# --- the loop --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    decision: str  # bootstrapped, promoted, rejected, no_drift, nothing_to_do, rolled_back
    message: str
    champion: str | None = None
    challenger: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_REJECTED if self.decision == "rejected" else EXIT_OK


def _in_run() -> bool:
    return mlflow.active_run() is not None


def _experiment_id(client, name) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _ledger(client, experiment_id, model_name, batch, champion_version):
    """The finished runs that already processed this batch against this champion (newest first)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`ct.model` = '{model_name}' and tags.`ct.batch` = '{batch}' "
            f"and tags.`ct.champion_version` = '{champion_version}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    return [run for run in runs if "ct.decision" in run.data.tags]


def bootstrap(*, model_name=MODEL_NAME, experiment=EXPERIMENT, gate=Gate(), actor=None, say=print) -> Outcome:
    """Train the first champion on the reference period, if the model has none; gate it on absolute thresholds."""
    client, actor = MlflowClient(), actor or getpass.getuser()
    current = champion_or_none(client, model_name)
    if current is not None:
        return Outcome(
            "nothing_to_do",
            f"{model_name} has a champion already (v{current.version}): nothing changed",
            champion=str(current.version),
        )
    experiment_id = _experiment_id(client, experiment)
    tags = {"ct.model": model_name, "ct.batch": "reference", "ct.champion_version": "none"}
    with mlflow.start_run(experiment_id=experiment_id, run_name="ct bootstrap", tags=tags):
        candidate = train_and_register(
            client, model_name, ["reference"], experiment_id, for_batch="reference", base_version=None
        )
        version = str(candidate.version)
        say(f"candidate: v{version}, trained on reference ({candidate.tags['training_digest']})")
        result = evaluate_version(model_name, version, split(load_batch("reference"))[1], experiment_id)
        thresholds = gate.thresholds(with_baseline=False)
        passed, why = check_gate(thresholds, result)
        numbers = {"gate.result": "passed" if passed else "failed", **gate_numbers(thresholds, result)}
        if passed:
            promote(
                client,
                model_name,
                version,
                actor=actor,
                extra=numbers,
                reason="bootstrap: first champion, trained on the reference period; absolute thresholds met",
            )
            outcome = Outcome("bootstrapped", f"v{version} is @{CHAMPION} and in Production", champion=version)
        else:
            reject(client, model_name, version, actor=actor, reason=why, extra=numbers)
            outcome = Outcome("rejected", f"no champion: v{version} failed the gate: {why}")
        mlflow.set_tags({"ct.decision": outcome.decision, "ct.version": version})
    return outcome


def run_once(
    batch, *, model_name=MODEL_NAME, experiment=EXPERIMENT, gate=Gate(), alpha=0.05, actor=None, force=False, say=print
) -> Outcome:
    """One pass of the loop over one labelled batch: drift → retrain → gate → promote."""
    client, actor = MlflowClient(), actor or getpass.getuser()
    current = load_batch(batch)  # fails early on an unknown name
    champion = champion_or_none(client, model_name)
    if champion is None:
        raise LoopError(
            f"{model_name} has no @{CHAMPION} in {mlflow.get_tracking_uri()}: run "
            "`python -m coursekit.ct bootstrap` once (or point MLFLOW_TRACKING_URI at the right store)"
        )
    if not {"training_data", "training_digest"} <= champion.tags.keys():
        raise LoopError(
            f"v{champion.version} has no training_data/training_digest tags: the loop can only retrain from a "
            "champion whose training set it can rebuild (one it trained, or one tagged as lesson 08 does)"
        )
    learnt, champion_version = champion.tags["training_data"].split("+"), str(champion.version)
    say(f"champion: {model_name} v{champion_version}, trained on {'+'.join(learnt)}")
    if batch in learnt:
        return Outcome(
            "nothing_to_do",
            f"the champion v{champion_version} learnt from batch {batch!r} already: nothing changed",
            champion=champion_version,
        )
    experiment_id = _experiment_id(client, experiment)
    done = _ledger(client, experiment_id, model_name, batch, champion_version)
    if done and not force:
        tags = done[0].data.tags
        decision = tags["ct.decision"]
        if decision == "promoted":  # and yet this version is the champion: someone rolled the promotion back
            decision = f"v{tags.get('ct.challenger_version', '?')} was promoted, then rolled back; --force retries"
        return Outcome(
            "nothing_to_do",
            f"batch {batch!r} was processed against v{champion_version} already (run {done[0].info.run_id}: "
            f"{decision}): nothing changed",
            champion=champion_version,
        )

    reference = training_frame(learnt)
    if fingerprint(reference) != champion.tags["training_digest"]:
        raise LoopError(
            f"the data v{champion_version} was trained on ({'+'.join(learnt)}) changed since: "
            "retraining would not be reproducible"
        )
    tags = {"ct.model": model_name, "ct.batch": batch, "ct.champion_version": champion_version}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"ct {batch} vs v{champion_version}", tags=tags):
        report = drift_report(reference, current, alpha)
        mlflow.log_text(report.to_csv(), "drift/report.csv")
        mlflow.log_dict(
            {
                "alpha": alpha,
                "correction": "holm",
                "reference": "+".join(learnt),
                "reference_rows": len(reference),
                "batch": batch,
                "batch_rows": len(current),
                "features": json.loads(report.to_json(orient="index")),
            },
            "drift/report.json",
        )
        drifted = report.index[report["drifted"]].tolist()
        mlflow.log_metrics({"drift.features": len(drifted), "drift.max_ks_statistic": report["ks_statistic"].max()})
        say(
            f"batch {batch!r}: {len(current)} rows; drift in {len(drifted)} of {len(FEATURES)} features "
            f"(Holm-adjusted p < {alpha}){': ' + ', '.join(drifted) if drifted else ''}"
        )
        if not drifted:
            mlflow.set_tag("ct.decision", "no_drift")
            return Outcome(
                "no_drift",
                f"no drift: nothing to retrain; v{champion_version} stays the champion",
                champion=champion_version,
            )

        challenger = train_and_register(
            client, model_name, [*learnt, batch], experiment_id, for_batch=batch, base_version=champion_version
        )
        challenger_version = str(challenger.version)
        client.set_registered_model_alias(model_name, CHALLENGER, challenger_version)
        say(f"challenger: v{challenger_version}, trained on {challenger.tags['training_data']}")
        holdout = split(current)[1]
        baseline = evaluate_version(model_name, champion_version, holdout, experiment_id)
        candidate = evaluate_version(model_name, challenger_version, holdout, experiment_id)
        thresholds = gate.thresholds()
        passed, why = check_gate(thresholds, candidate, baseline)
        numbers = gate_numbers(thresholds, candidate, baseline, champion_version)
        rmse_new, rmse_old = (r.metrics["root_mean_squared_error"] for r in (candidate, baseline))
        say(
            f"gate on {len(holdout)} held-out rows of {batch!r}: RMSE v{challenger_version} {rmse_new:.3f} vs "
            f"v{champion_version} {rmse_old:.3f} ({abs(1 - rmse_new / rmse_old):.1%} "
            f"{'lower' if rmse_new <= rmse_old else 'higher'}): "
            f"{'passed' if passed else 'failed'}"
        )
        numbers["gate.result"] = "passed" if passed else "failed"
        if passed:
            reason = (
                f"drift in {', '.join(drifted)}; gate passed on {len(holdout)} held-out rows of {batch!r}: "
                f"RMSE {rmse_new:.3f} vs v{champion_version}'s {rmse_old:.3f}"
            )
            promote(client, model_name, challenger_version, actor=actor, reason=reason, extra=numbers)
            outcome = Outcome(
                "promoted",
                f"promoted v{challenger_version} to @{CHAMPION} and Production (v{champion_version} archived)",
                challenger_version,
                challenger_version,
            )
        else:
            reject(client, model_name, challenger_version, actor=actor, reason=why, extra=numbers)
            outcome = Outcome(
                "rejected",
                f"v{challenger_version} failed the gate; v{champion_version} stays the champion: {why}",
                champion_version,
                challenger_version,
            )
        mlflow.set_tags({"ct.decision": outcome.decision, "ct.challenger_version": challenger_version})
    return outcome


def status(*, model_name=MODEL_NAME, say=print) -> Outcome:
    client = MlflowClient()
    champion = champion_or_none(client, model_name)
    aliases = {}
    if champion is not None:
        for alias, version in client.get_registered_model(model_name).aliases.items():
            aliases.setdefault(str(version), []).append(f"@{alias}")
    versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version))
    say(f"{model_name} in {mlflow.get_tracking_uri()}: {len(versions)} versions")
    for version in versions:
        say(
            f"  v{version.version:<3} {version.current_stage:<10} "
            f"{' '.join(aliases.get(str(version.version), [])):<12} "
            f"trained on {version.tags.get('training_data', '?'):<24} gate {version.tags.get('gate.result', '-')}"
        )
    trail = audit_trail(client, model_name) if versions else pd.DataFrame()
    for row in trail.itertuples():
        say(f"  {row.when}  v{row.version} {row.event} by {row.who}: {row.why}")
    return Outcome(
        "nothing_to_do",
        f"@{CHAMPION}: v{champion.version}" if champion else f"no @{CHAMPION}",
        champion=str(champion.version) if champion else None,
    )


# --- command line ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=MODEL_NAME, help=f"registered model (default {MODEL_NAME})")
    common.add_argument(
        "--experiment", default=EXPERIMENT, help=f"experiment of the loop's runs (default {EXPERIMENT})"
    )
    common.add_argument("--actor", default=None, help="who is acting, for the audit trail (default: the OS user)")
    gate = argparse.ArgumentParser(add_help=False)
    gate.add_argument("--max-rmse", type=float, default=Gate.max_rmse, help="absolute RMSE ceiling, in $100k")
    gate.add_argument("--min-r2", type=float, default=Gate.min_r2, help="absolute R² floor")

    parser = argparse.ArgumentParser(prog="python -m coursekit.ct", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bootstrap", parents=[common, gate], help="train the first champion, if there is none")
    run = commands.add_parser("run", parents=[common, gate], help="one pass of the loop over a batch")
    run.add_argument("--batch", required=True, choices=list(BATCHES), help="the labelled batch that landed")
    run.add_argument(
        "--min-improvement",
        type=float,
        default=Gate.min_improvement,
        help="minimum relative RMSE improvement over the champion (0.05 = 5%%)",
    )
    run.add_argument("--alpha", type=float, default=0.05, help="family-wise false-alarm rate of the drift test")
    run.add_argument("--force", action="store_true", help="process the batch even if it was, against this champion")
    back = commands.add_parser("rollback", parents=[common], help="put the previous champion back")
    back.add_argument("--reason", required=True, help="why: recorded on both versions")
    back.add_argument("--to-version", help="the version to restore (default: the one the champion replaced)")
    back.add_argument("--from-version", help="only if this version is still the champion (safe to retry)")
    commands.add_parser("status", parents=[common], help="champion, versions and audit trail")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A scheduler's log is not a terminal: MLflow's download progress bars would only add noise to it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.command == "status":
            outcome = status(model_name=args.model)
        elif args.command == "rollback":
            outcome = rollback(
                MlflowClient(),
                args.model,
                actor=args.actor or getpass.getuser(),
                reason=args.reason,
                to_version=args.to_version,
                from_version=args.from_version,
            )
        elif args.command == "bootstrap":
            gate = Gate(max_rmse=args.max_rmse, min_r2=args.min_r2)
            outcome = bootstrap(model_name=args.model, experiment=args.experiment, gate=gate, actor=args.actor)
        else:
            gate = Gate(max_rmse=args.max_rmse, min_r2=args.min_r2, min_improvement=args.min_improvement)
            outcome = run_once(
                args.batch,
                model_name=args.model,
                experiment=args.experiment,
                gate=gate,
                alpha=args.alpha,
                actor=args.actor,
                force=args.force,
            )
    except LoopError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(outcome.message)
    print(f"decision: {outcome.decision}")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
