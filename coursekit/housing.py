"""Make plain ``sklearn.datasets.fetch_california_housing()`` work, online or offline.

scikit-learn keeps the data set as a compressed array in ``<data_home>/cal_housing_py3.pkz``
and never touches the network when that file exists. Provisioning therefore means: verify
that cache if it is there, else let scikit-learn download it, else build the same cache
from a local copy of the raw StatLib file ``cal_housing.data`` (checksum-verified first).

Run it as ``python -m coursekit.housing [--raw PATH]``; ``make data`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "datasets" / "california_housing.json"
CACHE_FILE = "cal_housing_py3.pkz"
RAW_ENV_VAR = "CAL_HOUSING_RAW"
# scikit-learn's column order for its cache: target first, longitude last (see _california_housing.py).
SKLEARN_COLUMN_ORDER = [8, 7, 2, 3, 4, 5, 6, 1, 0]
DOWNLOAD_TIMEOUT_SECONDS = 20


class DataUnavailable(RuntimeError):
    """California Housing could not be provisioned; the message says what to do."""


@dataclass(frozen=True)
class Outcome:
    how: str  # "cache", "download" or "raw"
    cache_path: Path

    def describe(self) -> str:
        verb = {
            "cache": "already in scikit-learn's cache, verified",
            "download": "downloaded by scikit-learn, verified",
            "raw": "cache built from the local StatLib file, verified",
        }[self.how]
        return f"California Housing: {verb} ({self.cache_path})"


def load_manifest(path: Path = MANIFEST_PATH) -> dict:
    return json.loads(path.read_text())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path(data_home: str | os.PathLike | None = None) -> Path:
    from sklearn.datasets import get_data_home

    return Path(get_data_home(data_home)) / CACHE_FILE


def load_frame(data_home: str | os.PathLike | None = None):
    """The frame exactly as a lesson gets it, without any network access."""
    from sklearn.datasets import fetch_california_housing

    return fetch_california_housing(data_home=data_home, as_frame=True, download_if_missing=False).frame


def mismatches(frame, manifest: dict) -> list[str]:
    """Every way ``frame`` differs from the manifest's recorded shape and statistics."""
    problems = []
    if len(frame) != manifest["rows"]:
        problems.append(f"{len(frame)} rows, expected {manifest['rows']}")
    expected_columns = list(manifest["statistics"])
    if list(frame.columns) != expected_columns:
        return [*problems, f"columns {list(frame.columns)}, expected {expected_columns}"]
    for column, stats in manifest["statistics"].items():
        values = frame[column]
        actual = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max()}
        for name, expected in stats.items():
            if not np.isclose(actual[name], expected, rtol=1e-6, atol=1e-6):
                problems.append(f"{column} {name} is {actual[name]:.6f}, expected {expected:.6f}")
    return problems


def verify(data_home: str | os.PathLike | None, manifest: dict) -> None:
    problems = mismatches(load_frame(data_home), manifest)
    if problems:
        raise DataUnavailable(
            f"The cache {cache_path(data_home)} does not hold the verified California Housing data: "
            + "; ".join(problems[:5])
            + ". Delete that file and provision again."
        )


def build_cache_from_raw(raw: Path, data_home: str | os.PathLike | None, manifest: dict) -> Path:
    """Write scikit-learn's cache from the raw StatLib file, as scikit-learn itself would."""
    import joblib

    if not raw.is_file():
        raise DataUnavailable(f"The local copy {raw} does not exist. {how_to_fetch(manifest)}")
    actual = sha256_of(raw)
    if actual != manifest["sha256"]:
        raise DataUnavailable(
            f"The local copy {raw} is corrupted or not the StatLib file: its sha256 is {actual}, "
            f"expected {manifest['sha256']}. {how_to_fetch(manifest)}"
        )
    array = np.loadtxt(raw, delimiter=",")[:, SKLEARN_COLUMN_ORDER]
    target = cache_path(data_home)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    joblib.dump(array, partial, compress=6)
    partial.replace(target)
    return target


def try_download(data_home: str | os.PathLike | None) -> str | None:
    """Let scikit-learn download the data as usual; return why it failed, or None on success."""
    from sklearn.datasets import fetch_california_housing

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)  # a black-holed network must not hang set-up
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Retry downloading")  # we report the failure ourselves
            fetch_california_housing(data_home=data_home, n_retries=1, delay=0.1)
        return None
    except OSError as error:  # URLError, timeouts, refused connections
        return str(error)
    finally:
        socket.setdefaulttimeout(previous)


def how_to_fetch(manifest: dict) -> str:
    return (
        f"Get the raw StatLib file '{manifest['raw_file']}' ({manifest['raw_bytes']:,} bytes, "
        f"sha256 {manifest['sha256']}; it is the member {manifest['archive_member']} of "
        f"scikit-learn's {manifest['archive']}), then run `make data {RAW_ENV_VAR}=/path/to/"
        f"{manifest['raw_file']}` or `python -m coursekit.housing --raw /path/to/{manifest['raw_file']}`."
    )


def provision(
    raw: Path | None = None,
    data_home: str | os.PathLike | None = None,
    allow_download: bool = True,
    manifest: dict | None = None,
) -> Outcome:
    manifest = manifest or load_manifest()
    cache = cache_path(data_home)
    if cache.exists():
        verify(data_home, manifest)
        return Outcome("cache", cache)
    download_failure = "download not attempted (--no-download)"
    if allow_download:
        download_failure = try_download(data_home)
        if download_failure is None:
            verify(data_home, manifest)
            return Outcome("download", cache)
        print(f"California Housing: download failed ({download_failure}); trying the local copy.", file=sys.stderr)
    if raw is not None:
        build_cache_from_raw(raw, data_home, manifest)
        verify(data_home, manifest)
        return Outcome("raw", cache)
    raise DataUnavailable(
        f"California Housing is not in scikit-learn's cache ({cache}), scikit-learn could not "
        f"download it ({download_failure}), and no local copy was given (--raw or ${RAW_ENV_VAR}). "
        + how_to_fetch(manifest)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--raw",
        type=Path,
        default=os.environ.get(RAW_ENV_VAR) or None,
        help=f"local cal_housing.data, used when the cache is missing and the download fails (default: ${RAW_ENV_VAR})",
    )
    parser.add_argument("--data-home", help="data home (default: $SCIKIT_LEARN_DATA or ~/scikit_learn_data)")
    parser.add_argument("--no-download", action="store_true", help="never try the network")
    args = parser.parse_args(argv)
    try:
        outcome = provision(args.raw, args.data_home, allow_download=not args.no_download)
    except DataUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(outcome.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
