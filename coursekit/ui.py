"""The kit's MLflow UI: one ``mlflow server`` command line, run locally or behind jupyter-server-proxy.

Locally, ``python -m coursekit.ui --port 5000`` (``make ui``) runs it on 127.0.0.1 and stops it, workers
included, on Ctrl-C or SIGTERM. On Binder, ``binder/jupyter_server_config.py`` hands :func:`proxy_server` to
jupyter-server-proxy, which starts the same command on demand behind JupyterLab's "MLflow UI" launcher.
Both read the store the lessons log to, so the UI shows the learner's runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The lessons' store: `make ui` names it in MLFLOW_TRACKING_URI, Binder's proxy uses this default. (`make lab` and
# Binder set nothing: a lesson's kernel runs in lessons/, where MLflow's default sqlite:///mlflow.db is this file.)
KIT_STORE_URI = f"sqlite:///{REPO / 'lessons' / 'mlflow.db'}"
LOOPBACK = "127.0.0.1"
# `mlflow server` imports starlette.middleware.wsgi, and Starlette warns on that import that the module is deprecated
# (a StarletteDeprecationWarning on every start). MLflow 3.17 imports it on purpose (mlflow/server/fastapi_app.py) and
# nothing the kit or a learner does can change that, so the warning is noise here. This -W filter hides exactly that
# message, raised from that one module, in the server's processes (uvicorn inherits the environment); every other
# warning still shows. Remove it once MLflow stops importing the module.
STARLETTE_WSGI_FILTER = "ignore:starlette.middleware.wsgi is deprecated::mlflow.server.fastapi_app"
# Binder gives 1–2 GB: one uvicorn worker and no job runner keep the server at two processes (~0.4 GB).
SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # After any filters of the user's own, so that theirs still apply and this one wins for its one message.
    "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), STARLETTE_WSGI_FILTER])),
}
# Pages that may POST to the proxied UI: the hubs of the mybinder.org federation. MLflow always accepts
# localhost pages (JupyterLab on a laptop); another JupyterHub adds its origin through ORIGINS_ENV_VAR.
BINDER_ORIGINS = (
    "https://mybinder.org",
    "https://*.mybinder.org",
    "https://*.mybinder.ovh",
    "https://hub.mybinder.turing.ac.uk",
    "https://notebooks.gesis.org",
)
ORIGINS_ENV_VAR = "COURSEKIT_UI_ORIGINS"
# The server needs ~20 s on an idle core to answer; a busy Binder node can take several times that.
STARTUP_TIMEOUT_SECONDS = 180
STOP_GRACE_SECONDS = 10
# Ctrl-C, kill, and a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def tracking_store() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or KIT_STORE_URI


def server_command(port: int | str, store_uri: str, allowed_origins: tuple[str, ...] = ()) -> list[str]:
    """The ``mlflow server`` command line, on the loopback interface only."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri]
    command += ["--host", LOOPBACK, "--port", str(port), "--workers", "1"]
    if allowed_origins:
        command += ["--cors-allowed-origins", ",".join(allowed_origins)]
    return command


def proxy_origins() -> tuple[str, ...]:
    extra = os.environ.get(ORIGINS_ENV_VAR, "").split(",")
    return BINDER_ORIGINS + tuple(origin.strip() for origin in extra if origin.strip())


def proxy_server() -> dict:
    """The jupyter-server-proxy entry for ``c.ServerProxy.servers["mlflow"]``."""
    return {
        "command": server_command("{port}", tracking_store(), proxy_origins()),
        "environment": SERVER_ENV,
        "timeout": STARTUP_TIMEOUT_SECONDS,
        # The proxy forwards the browser's Host (the hub's name), which MLflow's DNS-rebinding guard refuses.
        # Jupyter has already checked that Host and authenticated the request, so name the upstream instead.
        "request_headers_override": {"Host": f"{LOOPBACK}:{{port}}"},
        "launcher_entry": {"title": "MLflow UI"},
    }


def wait_until_healthy(process: subprocess.Popen, url: str, timeout: float = STARTUP_TIMEOUT_SECONDS) -> bool:
    """True once ``url``/health answers; False if the server exits or the timeout passes first."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $http_proxy: it is local
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with direct.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    return False


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (CLI, uvicorn, any worker); SIGKILL what outlives the grace."""
    group = process.pid  # the server leads its own session, so its pid names its group
    if group_alive(group):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or it stays in the group as a zombie
        if not group_alive(group):
            return
        time.sleep(0.1)
    if group_alive(group):
        os.killpg(group, signal.SIGKILL)
    process.wait()


def serve(port: int, store_uri: str) -> int:
    url = f"http://{LOOPBACK}:{port}"
    # Each stop signal stops the server. SIGINT's handler is set by hand too: a shell without job control starts
    # background commands with SIGINT ignored.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, lambda signum, frame: sys.exit(128 + signum))
    # A session of its own: Ctrl-C reaches only us, and we stop the server's group as a whole.
    process = subprocess.Popen(
        server_command(port, store_uri), env={**os.environ, **SERVER_ENV}, start_new_session=True
    )
    try:
        if not wait_until_healthy(process, url):
            print(f"error: the MLflow server did not answer at {url} (see its output above).", file=sys.stderr)
            return 1
        print(f"MLflow UI for {store_uri}: {url}  (Ctrl-C stops it)", flush=True)
        return process.wait()
    finally:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)  # a second Ctrl-C must not abandon the clean-up half-way
        stop_group(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--store",
        default=tracking_store(),
        help="tracking store (default: $MLFLOW_TRACKING_URI, else lessons/mlflow.db)",
    )
    args = parser.parse_args(argv)
    return serve(args.port, args.store)


if __name__ == "__main__":
    sys.exit(main())
