"""Lesson 08's continuous-training loop, ``coursekit.ct``: the documented drift and a test that finds it (and stays
silent without it), the canary split, the sample CI workflow, and the loop end to end in a store of its own:
promote on drift, a re-run that changes nothing, a failing gate that leaves @champion alone, and a rollback."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from sklearn.model_selection import train_test_split

from coursekit import ct

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "continuous-training.yml"
# mlflow.models.evaluate imports xgboost to check whether the model is an XGBoost one, through MLflow's own
# post-import hook loader (mlflow/utils/import_hooks), which still uses importlib's deprecated load_module().
pytestmark = [
    pytest.mark.filterwarnings("ignore:the load_module\\(\\) method is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:_ImportHookChainedLoader.exec_module\\(\\) not found:ImportWarning"),
]


# --- the data rule and the drift test ---------------------------------------------------------------------------


def test_the_periods_follow_the_documented_rule():
    batches = {name: ct.load_batch(name) for name in ct.BATCHES}
    assert (batches["reference"]["Latitude"] >= ct.SOUTH_OF_LATITUDE).all()
    assert (batches["stable"]["Latitude"] >= ct.SOUTH_OF_LATITUDE).all()
    assert (batches["drifted"]["Latitude"] < ct.SOUTH_OF_LATITUDE).all()
    assert (batches["live"]["Latitude"] < ct.SOUTH_OF_LATITUDE).all()
    ids = np.concatenate([frame.index for frame in batches.values()])
    assert len(ids) == len(set(ids)) == 20640  # every district in exactly one period
    north = len(batches["reference"]) + len(batches["stable"])
    assert abs(len(batches["reference"]) / north - 0.8) < 0.02
    assert abs(len(batches["drifted"]) / (len(batches["drifted"]) + len(batches["live"])) - 0.5) < 0.02
    assert list(batches["drifted"].columns) == [*ct.FEATURES, ct.TARGET]


def test_the_holdout_split_is_a_stable_30_percent_whatever_the_row_order():
    drifted = ct.load_batch("drifted")
    train, holdout = ct.split(drifted)
    assert abs(len(holdout) / len(drifted) - 0.3) < 0.02
    assert set(train.index).isdisjoint(holdout.index) and len(train) + len(holdout) == len(drifted)
    shuffled = drifted.sample(frac=1.0, random_state=0)
    assert set(ct.split(shuffled)[1].index) == set(holdout.index)


def test_holm_by_hand():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06 (never decreasing).
    np.testing.assert_allclose(ct.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    p = np.array([0.01, 0.015, 0.03, 0.2])
    assert (ct.holm(p) < 0.05).sum() == 2 and (p * len(p) < 0.05).sum() == 1  # more power than Bonferroni
    assert (ct.holm(p) >= p).all() and (ct.holm(p) <= np.minimum(1, p * len(p))).all()


def test_the_drift_test_finds_the_documented_drift():
    report = ct.drift_report(ct.training_frame(["reference"]), ct.load_batch("drifted"))
    assert report["drifted"].all(), report
    assert report.loc["Latitude", "ks_statistic"] == 1.0  # the two regions do not overlap at all
    assert report.loc["Longitude", "ks_statistic"] > 0.9


@pytest.mark.parametrize("seed", range(5))
def test_the_drift_test_stays_silent_on_a_random_split(seed):
    first, second = train_test_split(ct.load_batch("reference"), test_size=0.5, random_state=seed)
    report = ct.drift_report(first, second)
    assert not report["drifted"].any(), report
    if seed == 2:  # here one raw p-value is below 0.05: without the correction, this split would raise an alarm
        assert report["p_value"].min() < 0.05


def test_the_drift_test_stays_silent_on_the_stable_batch():
    report = ct.drift_report(ct.training_frame(["reference"]), ct.load_batch("stable"))
    assert not report["drifted"].any(), report


# --- the canary split --------------------------------------------------------------------------------------------


def test_the_canary_split_is_deterministic_and_about_ten_percent():
    ids = np.arange(100_000)
    arms = ct.canary_arm(ids)
    assert set(arms) == {"champion", "challenger"}
    assert 0.095 < (arms == "challenger").mean() < 0.105  # 10% ± 5 standard deviations
    assert (ct.canary_arm(ids) == arms).all()
    assert (ct.canary_arm(ids[::-1])[::-1] == arms).all()  # an id's arm does not depend on the others
    # SHA-256, not Python's per-process salted hash(): these ids go to the challenger in every process, every day.
    assert np.flatnonzero(arms[:200] == "challenger").tolist() == [
        24, 33, 41, 44, 48, 67, 82, 94, 112, 122, 141, 144, 145, 157, 173, 185, 188
    ]  # fmt: skip
    # Widening the canary only adds requests to it: nobody who had the challenger goes back to the champion.
    wider = ct.canary_arm(ids, percent=25)
    assert 0.24 < (wider == "challenger").mean() < 0.26
    assert (wider[arms == "challenger"] == "challenger").all()
    assert list(ct.canary_arm(["req-1", "req-1", "user-42"])) == list(ct.canary_arm(["req-1", "req-1", "user-42"]))


# --- the sample CI workflow --------------------------------------------------------------------------------------


def test_the_sample_workflow_runs_the_loop_on_a_schedule_with_options_it_accepts():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"].split()[-1] == "1"  # weekly, on Mondays
    assert set(triggers["workflow_dispatch"]["inputs"]["batch"]["options"]) <= set(ct.BATCHES)
    assert workflow["concurrency"]["cancel-in-progress"] is False  # never two loops at once, never killed mid-way
    job = workflow["jobs"]["loop"]
    assert job["if"] == "vars.MLFLOW_TRACKING_URI != ''" and "MLFLOW_TRACKING_URI" in job["env"]
    values = {"CT_BATCH": "drifted", "CT_ACTOR": "github-actions/continuous-training#7 (someone)"}
    commands = [step["run"] for step in job["steps"] if "coursekit.ct" in step.get("run", "")]
    assert len(commands) == 2
    parsed = []
    for command in commands:
        # Substituted as the shell would: a value with spaces stays one word only if the command quotes it.
        words = shlex.split(re.sub(r"\$(\w+)", lambda name: values[name.group(1)], command))
        assert words[:3] == ["python", "-m", "coursekit.ct"]
        parsed.append(ct.build_parser().parse_args(words[3:]))
    assert parsed[0].command == "run" and parsed[0].batch == "drifted" and parsed[0].actor == values["CT_ACTOR"]
    assert parsed[1].command == "status"


# --- the loop, end to end ----------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty MLflow store of its own, as ``python -m coursekit.ct`` would use in a scheduler's folder."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # A set_tracking_uri() left by another test would win over the variable: fail rather than write elsewhere.
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == uri
    return tmp_path


def snapshot(client):
    """Everything the loop could change: versions (stage, tags, description), aliases, runs."""
    versions = client.search_model_versions(f"name = '{ct.MODEL_NAME}'")
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return {
        "versions": sorted((int(v.version), v.current_stage, sorted(v.tags.items()), v.description) for v in versions),
        "aliases": client.get_registered_model(ct.MODEL_NAME).aliases,
        "runs": sorted(run.info.run_id for run in client.search_runs(experiments, max_results=1000)),
    }


def production(client):
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{ct.MODEL_NAME}'")
                  if v.current_stage == "Production")  # fmt: skip


def champion(client):
    return int(client.get_model_version_by_alias(ct.MODEL_NAME, ct.CHAMPION).version)


def test_the_loop_end_to_end(store, capsys):
    client = MlflowClient()

    # No champion yet: the loop refuses to start rather than bootstrap one silently (maybe in the wrong store).
    assert ct.main(["run", "--batch", "drifted"]) == ct.EXIT_ERROR
    assert "run `python -m coursekit.ct bootstrap` once" in capsys.readouterr().err

    # The first champion, through the real command line: a new process, the store of the folder it runs in.
    done = subprocess.run(
        [sys.executable, "-m", "coursekit.ct", "bootstrap"], cwd=store, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "decision: bootstrapped"
    assert not re.search(r"warning\b|deprecat", done.stderr, re.IGNORECASE), done.stderr
    assert champion(client) == 1 and production(client) == [1]
    v1 = client.get_model_version(ct.MODEL_NAME, "1")
    assert v1.tags["training_data"] == "reference" and v1.tags["gate.result"] == "passed"

    # Bootstrap again, and a batch without drift: nothing changes, and the loop says so.
    before = snapshot(client)
    assert ct.main(["bootstrap"]) == 0
    assert "has a champion already (v1): nothing changed" in capsys.readouterr().out
    assert snapshot(client) == before
    assert ct.main(["run", "--batch", "stable"]) == 0
    assert "decision: no_drift" in capsys.readouterr().out
    after_check = snapshot(client)
    assert after_check["versions"] == before["versions"] and after_check["aliases"] == before["aliases"]
    assert len(after_check["runs"]) == len(before["runs"]) + 1  # the drift check's run: the ledger entry
    assert ct.main(["run", "--batch", "stable"]) == 0
    assert "processed against v1 already" in capsys.readouterr().out
    assert snapshot(client) == after_check

    # The drifted batch: drift → retrain → gate → promote.
    assert ct.main(["run", "--batch", "drifted", "--actor", "scheduler"]) == 0
    out = capsys.readouterr().out
    assert "drift in 8 of 8 features" in out and out.splitlines()[-1] == "decision: promoted"
    assert champion(client) == 2 and production(client) == [2]
    assert client.get_model_version(ct.MODEL_NAME, "1").current_stage == "Archived"
    v2 = client.get_model_version(ct.MODEL_NAME, "2")
    assert v2.tags["training_data"] == "reference+drifted" and v2.tags["previous_champion"] == "1"
    assert v2.tags["gate.result"] == "passed" and v2.tags["promoted.by"] == "scheduler"
    new, old = float(v2.tags["gate.root_mean_squared_error"]), float(v2.tags["gate.baseline.root_mean_squared_error"])
    assert new <= ct.Gate.max_rmse and new <= old * (1 - ct.Gate.min_improvement)
    assert float(v2.tags["gate.r2_score"]) >= ct.Gate.min_r2
    assert "promoted by scheduler" in v2.description
    assert ct.CHALLENGER not in client.get_registered_model(ct.MODEL_NAME).aliases
    loop_run = client.get_run(client.search_runs(
        [client.get_experiment_by_name(ct.EXPERIMENT).experiment_id], "tags.`ct.decision` = 'promoted'"
    )[0].info.run_id)  # fmt: skip
    artifacts = [a.path for a in client.list_artifacts(loop_run.info.run_id, "drift")]
    assert artifacts == ["drift/report.csv", "drift/report.json"]

    # The same batch again: the champion learnt from it already, nothing changes.
    before = snapshot(client)
    assert ct.main(["run", "--batch", "drifted"]) == 0
    assert "learnt from batch 'drifted' already: nothing changed" in capsys.readouterr().out
    assert snapshot(client) == before

    # A gate that fails (an absolute RMSE bar no forest reaches): exit 3, the challenger is recorded as rejected,
    # and @champion, Production and every other version stay as they were.
    assert ct.main(["run", "--batch", "live", "--max-rmse", "0.1"]) == ct.EXIT_REJECTED
    assert "value threshold check failed" in capsys.readouterr().out
    assert champion(client) == 2 and production(client) == [2]
    v3 = client.get_model_version(ct.MODEL_NAME, "3")
    assert v3.current_stage == "None" and v3.tags["gate.result"] == "failed"
    assert "root_mean_squared_error threshold = 0.1" in v3.tags["rejected.reason"]
    assert ct.CHALLENGER not in client.get_registered_model(ct.MODEL_NAME).aliases
    unchanged = snapshot(client)
    assert [v for v in unchanged["versions"] if v[0] != 3] == before["versions"]

    # Rollback in one call: v1 is back behind both pointers, with who, when and why on both versions.
    assert ct.main(["rollback", "--reason", "incident 42: latency", "--actor", "alice"]) == 0
    assert champion(client) == 1 and production(client) == [1]
    assert client.get_model_version(ct.MODEL_NAME, "2").current_stage == "Archived"
    trail = ct.audit_trail(client, ct.MODEL_NAME)
    assert trail[["version", "event"]].values.tolist() == [
        [1, "promoted"], [2, "promoted"], [3, "rejected"], [2, "rolled_back"], [1, "restored"]
    ]  # fmt: skip
    assert trail.iloc[-1]["who"] == trail.iloc[-2]["who"] == "alice"
    assert trail.iloc[-1]["why"] == "incident 42: latency" and trail["when"].is_monotonic_increasing

    # A retried rollback is harmless, and the loop does not undo the rollback by promoting the drifted batch again.
    before = snapshot(client)
    assert ct.main(["rollback", "--reason", "retry", "--from-version", "2"]) == 0
    assert "the champion is v1, not v2: nothing changed" in capsys.readouterr().out
    assert ct.main(["run", "--batch", "drifted"]) == 0
    assert "v2 was promoted, then rolled back" in capsys.readouterr().out
    assert snapshot(client) == before
    assert champion(client) == 1
