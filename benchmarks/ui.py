"""Start-up time and memory of the MLflow UI behind jupyter-server-proxy, as a Binder learner meets it.

Starts JupyterLab with binder/jupyter_server_config.py on a new store, opens the proxied UI once with a hub's
Host header (that request starts the server), and prints how long it took and the resident memory of the
server's processes. Run from the repository's root: ``.venv/bin/python benchmarks/ui.py``.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, token: str, timeout: float = 600) -> int:
    headers = {"Authorization": f"token {token}", "Host": "hub.mybinder.turing.ac.uk"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        response.read()
        return response.status


def start_jupyter(workdir: Path, port: int, token: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "jupyter", "lab", f"--config={REPO / 'binder' / 'jupyter_server_config.py'}"]
    command += ["--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}"]
    command += [f"--IdentityProvider.token={token}", "--ServerApp.allow_remote_access=True"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "JUPYTER_CONFIG_DIR": str(workdir / "config"),
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
    }
    log = (workdir / "jupyter.log").open("w")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_jupyter(base_url: str, token: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get(f"{base_url}/api/status", token, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"JupyterLab did not answer at {base_url}")


def server_tree(jupyter: subprocess.Popen) -> list[psutil.Process]:
    """The processes the proxy started for the MLflow UI: the mlflow CLI and the uvicorn server under it."""
    return [p for p in psutil.Process(jupyter.pid).children(recursive=True) if "mlflow" in " ".join(p.cmdline())]


def main() -> None:
    port, token = free_port(), secrets.token_hex(16)
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as workdir:
        jupyter = start_jupyter(Path(workdir), port, token)
        try:
            wait_for_jupyter(base_url, token)
            started = time.monotonic()
            status = get(f"{base_url}/mlflow/", token)
            start_seconds = time.monotonic() - started
            started = time.monotonic()
            get(f"{base_url}/mlflow/", token)
            warm_seconds = time.monotonic() - started
            time.sleep(2)  # let the server settle after its first pages
            # RSS counts the pages the two processes share twice; PSS splits them, so its sum is the real total.
            memory = {" ".join(p.cmdline()[1:4]): p.memory_full_info() for p in server_tree(jupyter)}
        finally:
            jupyter.send_signal(signal.SIGTERM)
            jupyter.wait(timeout=60)
    print(f"MLflow UI through jupyter-server-proxy (HTTP {status}), {psutil.cpu_count()} cores:")
    print(f"  first page, server start included: {start_seconds:.1f} s")
    print(f"  page once running:                 {warm_seconds * 1000:.0f} ms")
    rss, pss = (sum(getattr(info, field) for info in memory.values()) / 2**30 for field in ("rss", "pss"))
    print(f"  server processes:                  {len(memory)}: RSS {rss:.2f} GiB, PSS {pss:.2f} GiB together")
    for command, info in memory.items():
        print(f"    RSS {info.rss / 2**20:4.0f} MiB, PSS {info.pss / 2**20:4.0f} MiB  {command}")


if __name__ == "__main__":
    main()
