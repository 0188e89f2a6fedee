"""The MLflow UI: local (`make ui`) and behind jupyter-server-proxy as on Binder, on the homework's real runs.

JupyterLab runs with binder/jupyter_server_config.py from the kit's environment (tests/test_binder.py checks
that Binder's Jupyter loads that file). Requests reach the proxied UI with a hub's Host and Origin, and a real
headless Chromium opens its runs page under a hub-like host name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import websocket
from mlflow import MlflowClient

from coursekit import ui
from tests.browser import Chromium, needs_chromium
from tests.notebooks import REPO, WARNING_PATTERN, execute

SOLUTION = REPO / "homework" / "solution" / "homework-195.ipynb"
ARTIFACTS = REPO / "test-artifacts"
BINDER_HOST = "hub.mybinder.turing.ac.uk"
# The browser reaches Jupyter under a hub-like name too; `.test` names resolve nowhere but in that browser.
BROWSER_HOST = "hub.binder.test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, headers: dict | None = None, data: bytes | None = None, timeout: float = 240):
    """(status, headers, body) of ``url``, error statuses included."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def search_experiments(base_url: str, headers: dict) -> tuple[int, bytes]:
    """MLflow's own UI call, as its page makes it: a JSON POST to the ajax API."""
    headers = {"Content-Type": "application/json", **headers}
    status, _, body = fetch(f"{base_url}/ajax-api/2.0/mlflow/experiments/search", headers, b'{"max_results": 100}')
    return status, body


def experiment_names(body: bytes) -> list[str]:
    return [experiment["name"] for experiment in json.loads(body)["experiments"]]


def lingering(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running after a short wait (zombies have exited: they only await reaping)."""
    _, alive = psutil.wait_procs(processes, timeout=20)
    return [process for process in alive if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def homework_store(tmp_path_factory) -> str:
    """The store the reference solution leaves: its ten-plus runs in experiment homework-195."""
    workdir = tmp_path_factory.mktemp("homework")
    execute(SOLUTION, workdir)
    return f"sqlite:///{workdir / 'mlflow.db'}"


# ---------------------------------------------------------------- local: python -m coursekit.ui (make ui)


def start_local_ui(store: str, port: int, output: Path) -> subprocess.Popen:
    """The launcher as `make ui` starts it, in a session of its own as a terminal's foreground job is."""
    return subprocess.Popen(
        [sys.executable, "-m", "coursekit.ui", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": store},
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def printed_url(launcher: subprocess.Popen, output: Path) -> str | None:
    """The URL the launcher prints once its server answers; None if it exits or times out first."""
    deadline = time.monotonic() + ui.STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and launcher.poll() is None:
        for line in output.read_text().splitlines():
            if line.startswith("MLflow UI for"):
                return line.split()[-4]
        time.sleep(0.5)
    return None


def test_local_ui_serves_the_store_and_stops_completely(tmp_path):
    """Ctrl-C in the terminal and SIGTERM each stop the launcher and every process of its server."""
    ports = {signal.SIGINT: free_port(), signal.SIGTERM: free_port()}
    # Both at once, as start-up is most of this test's time; each on its own new store, since two servers that
    # create the same store at once race on its schema migrations.
    launchers = {
        stop: start_local_ui(f"sqlite:///{tmp_path / stop.name}.db", port, tmp_path / f"ui-{stop.name}.out")
        for stop, port in ports.items()
    }
    servers = {}
    try:
        for stop, launcher in launchers.items():
            base_url = f"http://127.0.0.1:{ports[stop]}"
            assert printed_url(launcher, tmp_path / f"ui-{stop.name}.out") == base_url
            status, _, page = fetch(f"{base_url}/")
            assert status == 200 and b"<title>MLflow</title>" in page
            status, body = search_experiments(base_url, {"Origin": f"http://localhost:{ports[stop]}"})
            assert status == 200 and experiment_names(body) == ["Default"]
            assert search_experiments(base_url, {"Origin": "https://evil.example"})[0] == 403
            servers[stop] = psutil.Process(launcher.pid).children(recursive=True)
            assert any("uvicorn" in process.cmdline() for process in servers[stop])
    finally:
        os.killpg(launchers[signal.SIGINT].pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        launchers[signal.SIGTERM].send_signal(signal.SIGTERM)
        returncodes = {stop: launcher.wait(timeout=30) for stop, launcher in launchers.items()}
    assert returncodes == {stop: 128 + stop for stop in launchers}
    assert [lingering(server) for server in servers.values()] == [[], []]
    # What a learner sees in the terminal of `make ui` until the URL: no warning or deprecation notice (Starlette's
    # is filtered). Later lines answer this test's own requests, the refused cross-origin one included.
    outputs = {stop: (tmp_path / f"ui-{stop.name}.out").read_text() for stop in launchers}
    start_up = {stop: output.split("MLflow UI for")[0].splitlines() for stop, output in outputs.items()}
    assert {stop: [line for line in lines if WARNING_PATTERN.search(line)] for stop, lines in start_up.items()} == {
        stop: [] for stop in launchers
    }


def test_server_filter_hides_only_starlettes_wsgi_notice(tmp_path):
    """ui.SERVER_ENV's warning filter: that one message, from MLflow's server module; nothing else."""
    message = "starlette.middleware.wsgi is deprecated and will be removed in a future release."
    script = tmp_path / "warn.py"
    script.write_text(
        "import warnings\n"
        "def warn_from(module, message):\n"
        "    exec('import warnings; warnings.warn(MESSAGE, UserWarning)', {'__name__': module, 'MESSAGE': message})\n"
        f"warn_from('mlflow.server.fastapi_app', {message!r})\n"
        "warn_from('mlflow.server.fastapi_app', 'another warning of the server')\n"
        f"warn_from('some_other_module', {message!r})\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": ui.SERVER_ENV["PYTHONWARNINGS"]}
    shown = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stderr
    assert [line.split(": ", 1)[1] for line in shown.splitlines()] == [
        "UserWarning: another warning of the server",
        f"UserWarning: {message}",
    ]


# ---------------------------------------------------------------- make lab: JupyterLab on the whole kit


def execute_in_kernel(base_url: str, token: str, notebook: str, code: str) -> str:
    """Start a kernel for ``notebook`` as JupyterLab does when it opens it, run ``code``, return its stdout."""
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    body = {"path": notebook, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
    status, _, reply = fetch(f"{base_url}/api/sessions", headers, json.dumps(body).encode(), timeout=60)
    assert status == 201, reply[:300]
    session = json.loads(reply)
    try:
        channels = websocket.create_connection(
            f"ws{base_url.removeprefix('http')}/api/kernels/{session['kernel']['id']}/channels",
            header=[f"Authorization: token {token}"],
            timeout=60,
        )
        request_id = secrets.token_hex(16)
        channels.send(
            json.dumps(
                {
                    "header": {"msg_id": request_id, "msg_type": "execute_request", "username": "", "version": "5.3",
                               "session": secrets.token_hex(16)},
                    "parent_header": {}, "metadata": {}, "channel": "shell",
                    "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True},
                }
            )
        )  # fmt: skip
        printed = []
        while True:
            message = json.loads(channels.recv())
            if message["parent_header"].get("msg_id") != request_id:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                printed.append(f"{message['content']['ename']}: {message['content']['evalue']}")
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        channels.close()
        return "".join(printed)
    finally:
        request = urllib.request.Request(f"{base_url}/api/sessions/{session['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(request, timeout=60).close()  # shuts the kernel down


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_make_lab_adds_allow_root_only_as_root():
    dry_run = subprocess.run(["make", "-n", "lab"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert ("--allow-root" in dry_run) == (os.geteuid() == 0), dry_run


@needs_make
def test_make_lab_serves_the_kit_and_each_notebook_logs_beside_itself(tmp_path):
    """`make lab` as a learner runs it: lessons/ and homework/ both reachable, lesson 01 first, and every kernel
    on MLflow's default store of its own folder, even when the shell has MLFLOW_TRACKING_URI set."""
    port, token = free_port(), secrets.token_hex(16)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"open_browser": False}}))
    env = {
        **os.environ,
        "JUPYTER_PORT": str(port),
        "JUPYTER_PORT_RETRIES": "0",  # fail rather than move to a port this test does not know
        "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'elsewhere.db'}",  # left over in a learner's shell
    }
    log = tmp_path / "lab.log"
    with log.open("w") as output:
        lab = subprocess.Popen(["make", "lab"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    server = Jupyter(port, token, lab)
    try:
        assert answers(server, timeout=120), log.read_text()[-3000:]
        processes = psutil.Process(lab.pid).children(recursive=True)
        request = urllib.request.Request(f"{base_url}/", headers={"Authorization": f"token {token}"})
        with pytest.raises(urllib.error.HTTPError) as redirect:
            urllib.request.build_opener(NoRedirect).open(request, timeout=30)
        assert redirect.value.headers["Location"].split("?")[0].endswith("/lab/tree/lessons/01_tracking.ipynb")
        assert f"{port}/lab/tree/lessons/01_tracking.ipynb?token=" in log.read_text()  # the URL printed to open
        status, _, listing = server.request("api/contents")
        assert status == 200
        assert {"lessons", "homework"} <= {entry["name"] for entry in json.loads(listing)["content"]}

        code = "import os, mlflow\nprint(os.getcwd(), mlflow.get_tracking_uri(), os.environ.get('MLFLOW_TRACKING_URI'))"
        for notebook in ("lessons/01_tracking.ipynb", "homework/homework-195.ipynb"):
            folder = REPO / Path(notebook).parent
            expected = f"{folder} sqlite:///{folder / 'mlflow.db'} None"
            assert execute_in_kernel(base_url, token, notebook, code).strip() == expected, notebook
    finally:
        os.killpg(lab.pid, signal.SIGTERM)  # as a closed terminal would: make and the server
        lab.wait(timeout=60)
    assert lingering(processes) == []


# ---------------------------------------------------------------- behind jupyter-server-proxy, as on Binder


@dataclass
class Jupyter:
    port: int
    token: str
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path: str, headers: dict | None = None, data: bytes | None = None):
        """Authenticated as JupyterLab's own requests are: the token in a header."""
        return fetch(f"{self.url}/{path}", {"Authorization": f"token {self.token}", **(headers or {})}, data)


@pytest.fixture(scope="module")
def jupyter(homework_store, tmp_path_factory) -> Jupyter:
    port, token = free_port(), secrets.token_hex(16)
    private = tmp_path_factory.mktemp("jupyter")
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        f"--config={REPO / 'binder' / 'jupyter_server_config.py'}",
        "--no-browser",
        "--allow-root",  # CI's machines run as root; Binder's do not, and the flag changes nothing else
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.root_dir={REPO}",
        f"--IdentityProvider.token={token}",
        # Binder's server listens on all interfaces, which turns Jupyter's own Host check off so that the hub's
        # name reaches the proxy. Only the loopback interface is open here; turn it off by hand.
        "--ServerApp.allow_remote_access=True",
    ]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": homework_store,  # what binder/start sets
        "JUPYTER_CONFIG_DIR": str(private / "config"),  # none of this machine's own Jupyter settings
        "JUPYTER_RUNTIME_DIR": str(private / "runtime"),
        # The browser's pages come from a hub outside the mybinder.org defaults: the documented way to add one.
        ui.ORIGINS_ENV_VAR: f"http://{BROWSER_HOST}:{port}",
    }
    with (private / "jupyter.log").open("w") as log:
        server = Jupyter(port, token, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        try:
            assert answers(server), f"JupyterLab did not start; see {log.name}"
            yield server
        finally:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
                server.process.wait(timeout=60)


def answers(server: Jupyter, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while server.process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if server.request("api/status")[0] == 200:
                return True
        time.sleep(0.5)
    return False


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_jupyter_opens_on_the_lessons(jupyter):
    request = urllib.request.Request(f"{jupyter.url}/", headers={"Authorization": f"token {jupyter.token}"})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(request, timeout=30)
    assert redirect.value.code == 302
    assert redirect.value.headers["Location"].split("?")[0].endswith("/lab/tree/lessons")
    assert jupyter.request("lab/tree/lessons/01_tracking.ipynb")[0] == 200  # the Binder badge's urlpath


def test_launcher_offers_the_mlflow_ui(jupyter):
    status, _, body = jupyter.request("server-proxy/servers-info")
    assert status == 200
    entries = {server["name"]: server["launcher_entry"] for server in json.loads(body)["server_processes"]}
    assert entries["mlflow"]["title"] == "MLflow UI" and entries["mlflow"]["enabled"]


def from_the_hub(origin: str | None = None) -> dict:
    """Headers as a hub's ingress passes them on: its own name as Host, the browser's address and scheme."""
    forwarded = {"X-Forwarded-Host": BINDER_HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    return {"Host": BINDER_HOST, **forwarded, **({"Origin": origin} if origin else {})}


def test_proxied_ui_answers_a_binder_host(jupyter):
    status, _, page = jupyter.request("mlflow/", from_the_hub())  # the first request starts the server
    assert status == 200, page[:300]
    assert b"<title>MLflow</title>" in page and b"static-files/static/js/main." in page
    authorized = {"Authorization": f"token {jupyter.token}"}
    status, body = search_experiments(f"{jupyter.url}/mlflow", from_the_hub(f"https://{BINDER_HOST}") | authorized)
    assert status == 200, body[:300]
    assert "homework-195" in experiment_names(body)
    # MLflow's guard against cross-site requests still stands behind the proxy.
    status, body = search_experiments(f"{jupyter.url}/mlflow", from_the_hub("https://evil.example") | authorized)
    assert status == 403, body[:300]


@needs_chromium
def test_browser_lists_the_homework_runs(jupyter, homework_store, tmp_path):
    client = MlflowClient(tracking_uri=homework_store)
    experiment = client.get_experiment_by_name("homework-195")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 10
    run_names = {run.info.run_name for run in runs}

    expected = {"homework-195", f"{len(runs)} matching runs", *run_names}

    # The token in the URL logs the browser in (Jupyter sets its cookie), as Binder's first redirect does.
    runs_page = f"mlflow/?token={jupyter.token}#/experiments/{experiment.experiment_id}/runs"
    ARTIFACTS.mkdir(exist_ok=True)
    with Chromium(tmp_path / "profile", host_rules=f"MAP {BROWSER_HOST} 127.0.0.1") as chromium:
        text = chromium.open(
            f"http://{BROWSER_HOST}:{jupyter.port}/{runs_page}",
            until=lambda text: all(part in text for part in expected),
            timeout=90,
        )
        chromium.screenshot(ARTIFACTS / "mlflow-ui-homework-runs.png")
    assert [part for part in expected if part not in text] == [], text[:2000]


def test_stopping_jupyter_stops_the_ui(jupyter):
    assert jupyter.request("mlflow/")[0] == 200  # starts the server if no other test did
    children = psutil.Process(jupyter.process.pid).children(recursive=True)
    assert any("uvicorn" in process.cmdline() for process in children), "the proxied server should be running"
    jupyter.process.send_signal(signal.SIGTERM)
    jupyter.process.wait(timeout=60)
    assert lingering(children) == []
