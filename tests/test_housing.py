"""Offline California Housing: the provisioned frame is the real one, and bad inputs get clear errors."""

import shutil
from pathlib import Path

import pytest
from sklearn.datasets import fetch_california_housing

from coursekit import housing

SHARED_RAW = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "california_housing" / "cal_housing.data"
needs_raw = pytest.mark.skipif(not SHARED_RAW.is_file(), reason=f"no local StatLib copy at {SHARED_RAW}")


@pytest.fixture
def offline(monkeypatch):
    """No test may depend on the internet: a download attempt fails as it does on a closed network."""
    monkeypatch.setattr(housing, "try_download", lambda data_home: "network disabled by the test")


def test_plain_fetch_gives_the_verified_frame():
    frame = fetch_california_housing(as_frame=True, download_if_missing=False).frame
    assert frame.shape == (20640, 9)
    # Published figures of the StatLib data set, independent of our manifest.
    assert frame["MedHouseVal"].mean() == pytest.approx(2.068558, abs=1e-6)
    assert frame["MedInc"].mean() == pytest.approx(3.870671, abs=1e-6)
    assert frame["Latitude"].mean() == pytest.approx(35.631861, abs=1e-6)
    assert frame.iloc[0]["MedInc"] == pytest.approx(8.3252)
    assert housing.mismatches(frame, housing.load_manifest()) == []


def test_manifest_catches_a_different_frame():
    frame = fetch_california_housing(as_frame=True, download_if_missing=False).frame
    altered = frame.copy()
    altered.loc[0, "MedInc"] += 100
    assert any("MedInc" in problem for problem in housing.mismatches(altered, housing.load_manifest()))
    assert "rows" in housing.mismatches(frame.iloc[:-1], housing.load_manifest())[0]


@needs_raw
def test_builds_cache_from_raw_file(tmp_path, offline):
    outcome = housing.provision(raw=SHARED_RAW, data_home=tmp_path)
    assert outcome.how == "raw"
    assert (tmp_path / "cal_housing_py3.pkz").is_file()
    assert len(housing.load_frame(tmp_path)) == 20640
    # A second run finds the verified cache and touches neither network nor raw file.
    assert housing.provision(raw=None, data_home=tmp_path).how == "cache"


def test_missing_file_says_exactly_what_to_fetch(tmp_path, offline):
    with pytest.raises(housing.DataUnavailable) as error:
        housing.provision(raw=tmp_path / "nowhere" / "cal_housing.data", data_home=tmp_path)
    message = str(error.value)
    assert "does not exist" in message
    assert "cal_housing.data" in message and housing.load_manifest()["sha256"] in message
    assert "make data CAL_HOUSING_RAW=" in message


def test_nothing_given_names_cache_download_and_file(tmp_path, offline):
    with pytest.raises(housing.DataUnavailable) as error:
        housing.provision(raw=None, data_home=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "cal_housing_py3.pkz") in message
    assert "network disabled by the test" in message
    assert "CaliforniaHousing/cal_housing.data" in message


@needs_raw
def test_corrupted_file_is_rejected_by_checksum(tmp_path, offline):
    corrupted = tmp_path / "cal_housing.data"
    data = bytearray(SHARED_RAW.read_bytes())
    data[100] = ord("9") if data[100] != ord("9") else ord("8")
    corrupted.write_bytes(bytes(data))
    with pytest.raises(housing.DataUnavailable, match="corrupted or not the StatLib file: its sha256 is"):
        housing.provision(raw=corrupted, data_home=tmp_path / "home")
    assert not (tmp_path / "home" / "cal_housing_py3.pkz").exists()


@needs_raw
def test_corrupted_cache_is_reported(tmp_path, offline):
    housing.provision(raw=SHARED_RAW, data_home=tmp_path)
    import joblib
    import numpy as np

    cache = tmp_path / "cal_housing_py3.pkz"
    array = joblib.load(cache)
    joblib.dump(np.delete(array, 0, axis=0), cache, compress=6)
    with pytest.raises(housing.DataUnavailable, match="Delete that file"):
        housing.provision(raw=SHARED_RAW, data_home=tmp_path)


def test_command_line_error_is_clear_and_nonzero(tmp_path, capsys, offline):
    missing = tmp_path / "cal_housing.data"
    assert housing.main(["--raw", str(missing), "--data-home", str(tmp_path / "home")]) == 1
    err = capsys.readouterr().err
    assert "\nerror: The local copy" in err and "sha256" in err


@needs_raw
def test_command_line_builds_from_shared_copy(tmp_path, capsys):
    shutil.copy(SHARED_RAW, tmp_path / "cal_housing.data")
    arguments = ["--no-download", "--raw", str(tmp_path / "cal_housing.data"), "--data-home", str(tmp_path)]
    assert housing.main(arguments) == 0
    assert "cache built from the local StatLib file" in capsys.readouterr().out
