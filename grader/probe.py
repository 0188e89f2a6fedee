"""Both ends of the probe: load a student's models and predict the canonical test split, never in the grader.

Loading a model runs code the student controls (pickles, custom pyfunc classes), so the grader never does it
itself. One probe server per grading process, ``python -I grader/probe.py --dataset ... --test-size ...
--random-state ...``, runs in the sandbox: it imports MLflow and the course's flavors and splits the data once
(seconds of CPU), then serves one request at a time. Per request it forks a child that loads the models from
copies in its inbox folder, predicts and exits; the server then kills whatever the child left running and wipes
its scratch space, so the next student's models meet a clean process forked from the same warm state. The
server is not dumpable, so a child cannot read or patch its memory.

Once warm, before it forks any child, the server writes ``{"targets": [...]}``: the split's true values.
Request (one JSON line on stdin): ``{"id", "models": {"LABEL": "FOLDER"}, "cpus": [...], "seconds"}``.
Reply (one JSON line on stdout): ``{"id", "exit", "timed_out", "answer", "log"}``, where ``answer`` is the text
the child wrote, ``{"LABEL": {"ok", "error", "predictions"}}``, and ``log`` the tail of what it printed.

The grader's end (``ProbeService``) copies each model folder out of the submission without following links,
trusts nothing in ``answer``, validates every number and computes the scores itself from the predictions and
the targets the server sent while no student code had run in it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ERROR_CHARS = 2000
LOG_CHARS = 600
MAX_ANSWER_BYTES = 10_000_000
MAX_MODEL_FILES = 10_000
# The course's flavors, imported once by the server so that no child pays for them. A model of another
# flavor still loads, only without the head start.
WARM_MODULES = (
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "mlflow.xgboost",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.tree",
    "skops.io",
    "cloudpickle",
)
SERVER_WALL_SECONDS = 7 * 24 * 3600  # it lives as long as the grading process; the parent's death ends it
STARTUP_SECONDS = 120  # for the server's imports, before its first line
REPLY_SECONDS = 10  # beyond the child's own time limit, for the server to clean up and reply
PR_SET_DUMPABLE = 4


# The server: runs in the sandbox.


def warm_up(x_test) -> None:
    """Import the flavors, then save and load one small model of the server's own: what MLflow does lazily on a
    first load (its map of the installed packages, to check a model's requirements: 0.7 s) is done here once."""
    import importlib

    for module in WARM_MODULES:
        with contextlib.suppress(ImportError):  # e.g. xgboost not installed: its models cannot load anyway
            importlib.import_module(module)
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    rows = x_test.iloc[:20]
    with tempfile.TemporaryDirectory(prefix="warm-up-") as folder:
        model = LinearRegression().fit(rows, range(len(rows)))
        mlflow.sklearn.save_model(model, f"{folder}/model", pip_requirements=["scikit-learn"])
        mlflow.pyfunc.load_model(f"{folder}/model").predict(rows)


def canonical_split(dataset: str, test_size: float, random_state: int):
    """(X_test, y_test) exactly as the homework's notebook builds them."""
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split

    if dataset != "california_housing":
        raise ValueError(f"unknown dataset {dataset!r}")
    features, target = fetch_california_housing(return_X_y=True, as_frame=True)
    _, x_test, _, y_test = train_test_split(features, target, test_size=test_size, random_state=random_state)
    return x_test, y_test


def predict_with(folder: str, x_test) -> dict:
    import mlflow.pyfunc
    import numpy as np

    try:
        predicted = np.asarray(mlflow.pyfunc.load_model(folder).predict(x_test), dtype=float).reshape(-1)
        if len(predicted) != len(x_test):
            raise ValueError(f"predict returned {len(predicted)} values for {len(x_test)} rows")
        if not np.isfinite(predicted).all():
            raise ValueError("predict returned NaN or infinite values")
    except Exception as error:  # any failure of student code is a finding, not a crash
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:ERROR_CHARS]}
    return {"ok": True, "error": None, "predictions": predicted.tolist()}


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--test-size", type=float, required=True)
    parser.add_argument("--random-state", type=int, required=True)
    parser.add_argument("--own-pid-namespace", action="store_true", help="every other process here is a child's")
    args = parser.parse_args(argv)

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints of the imports land in the log
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no child can ptrace it or write its memory
    x_test, y_test = canonical_split(args.dataset, args.test_size, args.random_state)
    warm_up(x_test)
    # The true values, for the grader to score predictions with: sent before any student code ran here.
    replies.write(json.dumps({"targets": y_test.tolist()}) + "\n")
    replies.flush()
    if threading.active_count() != 1:  # fork copies only the calling thread: a lock held elsewhere would hang
        print(f"probe server: {threading.active_count()} threads before forking", file=sys.stderr)
    for line in sys.stdin:
        request = json.loads(line)
        replies.write(json.dumps(_serve_one(request, x_test, args.own_pid_namespace)) + "\n")
        replies.flush()
    os._exit(0)  # tearing down MLflow's imports takes seconds


def _serve_one(request: dict, x_test, own_pid_namespace: bool) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="probe-"))
    child = os.fork()
    if child == 0:
        _child(request, x_test, scratch)  # never returns
    timed_out = not _exited_within(child, request["seconds"])
    _kill_leftovers(child, own_pid_namespace)
    _, status = os.waitpid(child, 0)
    reply = {
        "id": request["id"],
        "exit": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "answer": _read_text(scratch / "answer.json", MAX_ANSWER_BYTES + 1),
        "log": _read_text(scratch / "log", 1_000_000)[-LOG_CHARS:],
    }
    if own_pid_namespace:  # the sandbox's /tmp and home, its only writable places: the child may have used both
        for folder in {Path(tempfile.gettempdir()), Path.home()}:
            _wipe(folder)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return reply


def _child(request: dict, x_test, scratch: Path) -> None:
    """Load and predict, then exit: whatever happens, this process never returns to the server's loop."""
    code = 1
    try:
        os.setsid()
        if request.get("cpus"):
            os.sched_setaffinity(0, request["cpus"])
        resource.setrlimit(resource.RLIMIT_CPU, (request["seconds"], request["seconds"]))
        log = os.open(scratch / "log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        answer = os.open(scratch / "answer.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.closerange(3, answer)  # the server's pipes: a child must not reach the grader directly
        os.closerange(answer + 1, 1 << 16)
        os.environ.update(TMPDIR=str(scratch), HOME=str(scratch))
        tempfile.tempdir = None
        os.chdir(scratch)
        results = {label: predict_with(folder, x_test) for label, folder in request["models"].items()}
        with os.fdopen(answer, "w") as stream:
            json.dump(results, stream, allow_nan=False)
        code = 0
    finally:
        os._exit(code)


def _exited_within(pid: int, seconds: float) -> bool:
    """Wait for the child up to ``seconds``; kill it when it overruns."""
    handle = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([handle], [], [], seconds)
    finally:
        os.close(handle)
    if not ready:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return bool(ready)


def _kill_leftovers(child: int, own_pid_namespace: bool) -> None:
    """End what the child started. In the sandbox's own pid namespace that is every process but this one and its
    ancestors, even those that left the child's session; outside one (sandbox off), the child's process group."""
    if not own_pid_namespace:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child, signal.SIGKILL)
        return
    keep, pid = set(), os.getpid()
    while pid > 0:
        keep.add(pid)
        pid = _parent_of(pid)
    for _ in range(5):  # a fork bomb can spawn new processes between the scan and the kill
        victims = [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) not in keep]
        victims = [pid for pid in victims if _is_alive(pid)]  # the child itself, unless it already exited
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _parent_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)


def _is_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _read_text(path: Path, limit: int) -> str:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return ""
        return stream.read(limit).decode(errors="replace")


def _wipe(folder: Path) -> None:
    """Empty ``folder``, even of folders a child made unreadable (it has this process's uid, so they can be
    opened again), but not of mount points: the sandbox mounts the kit, the venv and the inbox at their own
    paths, which may lie under /tmp. Never follows a link. Should it still fail, the exception ends the server:
    the grader starts a fresh one, in a fresh sandbox, so nothing of one student's reaches the next."""
    mounts = _mount_points()
    on_the_way = {str(parent) for mount in mounts for parent in Path(mount).parents}
    pending = [(entry.path, False) for entry in os.scandir(folder)]
    while pending:
        path, emptied = pending.pop()
        if path in mounts:
            continue
        if path in on_the_way:  # bwrap's folder above a mount: it stays, what a child put beside the mount goes
            pending.extend((entry.path, False) for entry in os.scandir(path))
        elif os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        elif emptied:
            os.rmdir(path)
        else:
            os.chmod(path, 0o700)
            pending.append((path, True))
            pending.extend((entry.path, False) for entry in os.scandir(path))


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        fields = [line.split()[4] for line in mountinfo]
    return {re.sub(r"\\([0-7]{3})", lambda escape: chr(int(escape[1], 8)), field) for field in fields}


# The grader's end: runs in the grader's process, trusts nothing the probe writes.


@dataclass
class ModelScore:
    """The probe's answer for one model, validated: either ok with numbers, or an error."""

    ok: bool
    error: str = ""
    rmse: float = math.nan
    r2: float = math.nan
    head: list[float] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)


class ProbeService:
    """The grader's end of the probe server: starts it, hands it one submission's models at a time, validates."""

    def __init__(self, rubric):
        from grader import sandbox  # not at the top: the server runs this file as a script, without the grader

        self.rubric = rubric
        limits = dataclasses.replace(rubric.limits, wall_seconds=SERVER_WALL_SECONDS, cpu_threads=1)
        self.box = sandbox.create(limits)
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.lines: _Lines | None = None  # the server's stdout
        self.folder: Path | None = None  # holds inbox/, the models to load (read-only in the sandbox), and home/
        self.log = None  # the server's stderr, for the message when it fails
        self.fresh = True  # its first line, the targets, is still to be read
        self.targets: tuple[float, ...] = ()
        self.requests = 0

    def start(self) -> None:
        """Launch the server (once): its imports run while the first notebook does."""
        with self.lock:
            self._ensure_running()

    def score(self, models: dict[str, tuple[Path, Path]], cpus: list[int] | None = None) -> dict[str, ModelScore]:
        """Load and predict each ``{label: (workdir, model folder inside it)}``; one submission at a time."""
        if not models:
            return {}
        with self.lock:
            self._ensure_running()
            _wipe(self.inbox)
            failed, request = {}, {}
            budget = self.rubric.limits.memory_mb * 2**20  # a model larger than the memory limit cannot load
            for label, (workdir, folder) in models.items():
                try:
                    budget -= copy_model(workdir, folder, self.inbox / label, budget)
                    request[label] = str(self.inbox / label)
                except (OSError, ValueError) as error:
                    failed[label] = ModelScore(False, f"its files could not be taken for loading: {error}")
            if not request:
                return failed
            reply = self._ask(request, cpus)
            return {**parse_reply(reply, list(request), self.targets, self.rubric.split.prediction_rows), **failed}

    @property
    def inbox(self) -> Path:
        return self.folder / "inbox"

    def close(self) -> None:
        with self.lock:
            self._stop()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)

    def _ask(self, models: dict[str, str], cpus: list[int] | None) -> dict | str:
        """The server's reply, or why there is none (then the server is restarted for the next submission)."""
        self.requests += 1
        request = {"id": self.requests, "models": models, "cpus": cpus, "seconds": self.rubric.probe_seconds}
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            if self.fresh:
                self.targets = _targets(json.loads(self.lines.read(STARTUP_SECONDS)))
                self.fresh = False
            reply = json.loads(self.lines.read(self.rubric.probe_seconds + REPLY_SECONDS))
            if not isinstance(reply, dict) or reply.get("id") != request["id"]:
                raise ValueError("a reply to another request")
            return reply
        except (OSError, ValueError, TimeoutError) as error:
            why = f"the probe server failed ({type(error).__name__}: {error}): {self._log_tail()}"
            self._stop()
            return why

    def _ensure_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self._stop()
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="grader-probe-"))
            self.inbox.mkdir(mode=0o755)
            atexit.register(self.close)
        home = self.folder / "home"
        self.box.prepare(home)
        split = self.rubric.split
        argv = [
            # A script, not -m grader.probe: the server has no use for the grader package's imports. -I keeps
            # its working directory and this folder (grader/inspect.py would shadow the standard library's) off
            # sys.path.
            *(sys.executable, "-I", str(Path(__file__).resolve())),
            *("--dataset", split.dataset, "--test-size", str(split.test_size)),
            *("--random-state", str(split.random_state)),
            *(["--own-pid-namespace"] if self.box.isolated else []),
        ]
        env = self.box.environment(home)
        env.pop("MLFLOW_TRACKING_URI", None)  # models load from folders: no store is ever opened
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
        self.fresh = True
        self.process = subprocess.Popen(
            self.box.command(argv, home, read_only=(self.inbox,)),
            cwd=home,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.lines = _Lines(self.process.stdout)

    def _stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.box.cleanup(self.folder / "home")
        self.process = None

    def _log_tail(self) -> str:
        self.log.seek(max(0, self.log.seek(0, os.SEEK_END) - LOG_CHARS))
        return self.log.read(LOG_CHARS).decode(errors="replace").strip()


_SERVICES: dict[tuple, ProbeService] = {}
_SERVICES_LOCK = threading.Lock()


def service(rubric) -> ProbeService:
    """The grading process's probe server for this rubric's data split and limits, started on first use."""
    key = (rubric.split, rubric.limits, rubric.probe_seconds)
    with _SERVICES_LOCK:
        if key not in _SERVICES:
            _SERVICES[key] = ProbeService(rubric)
            _SERVICES[key].start()  # later, score() restarts it if it died
        return _SERVICES[key]


def copy_model(workdir: Path, folder: Path, destination: Path, budget: int) -> int:
    """Copy ``folder`` (inside ``workdir``) to ``destination``: folders and regular files only, never through a
    link, at most ``budget`` bytes. Returns the bytes copied. The notebook made that tree: a link in it could
    point at any file of the grading machine, and a fifo would block the copy forever."""
    relative = folder.resolve().relative_to(workdir.resolve())
    descriptor = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in relative.parts:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        return _copy_tree(descriptor, destination, budget)
    finally:
        os.close(descriptor)


def _copy_tree(top: int, destination: Path, budget: int) -> int:
    copied, files = 0, 0
    pending = [(os.dup(top), destination)]
    while pending:
        descriptor, target = pending.pop()
        target.mkdir()
        try:
            for entry in os.scandir(descriptor):
                files += 1
                if files > MAX_MODEL_FILES:
                    raise ValueError(f"the model has more than {MAX_MODEL_FILES} files")
                kind = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(kind):
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                    pending.append((os.open(entry.name, flags, dir_fd=descriptor), target / entry.name))
                elif stat.S_ISREG(kind):
                    copied += _copy_file(descriptor, entry.name, target / entry.name, budget - copied)
        finally:
            os.close(descriptor)
    return copied


def _copy_file(directory: int, name: str, target: Path, budget: int) -> int:
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    with os.fdopen(source, "rb") as stream, target.open("wb") as sink:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ValueError(f"{name} is not a regular file")
        while chunk := stream.read(1 << 20):
            budget -= len(chunk)
            if budget < 0:
                raise ValueError("the model's files are larger than the memory it may use")
            sink.write(chunk)
        return sink.tell()


class _Lines:
    """The server's stdout, a line at a time, each within a time limit and ``2 × MAX_ANSWER_BYTES``."""

    def __init__(self, stream):
        self.descriptor = stream.fileno()
        self.buffer = b""

    def read(self, seconds: float) -> bytes:
        deadline = time.monotonic() + seconds
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.descriptor], [], [], remaining)[0]:
                raise TimeoutError(f"no answer within {seconds:.0f} s")
            chunk = os.read(self.descriptor, 1 << 20)
            if not chunk:
                raise OSError("the probe server ended")
            self.buffer += chunk
            if len(self.buffer) > 2 * MAX_ANSWER_BYTES:
                raise ValueError("an oversized reply")
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


def _targets(hello: object) -> tuple[float, ...]:
    targets = hello.get("targets") if isinstance(hello, dict) else None
    if not _finite_list(targets) or not targets:
        raise ValueError("its first line holds no test targets")
    return tuple(float(value) for value in targets)


def parse_reply(
    reply: dict | str, labels: list[str], targets: tuple[float, ...], head_rows: int
) -> dict[str, ModelScore]:
    """Scores from the server's reply; ``reply`` is a string when there was none."""
    if isinstance(reply, str):
        return {label: ModelScore(False, reply[-ERROR_CHARS:]) for label in labels}
    if reply.get("timed_out"):
        return {label: ModelScore(False, "loading and predicting took too long") for label in labels}
    log = str(reply.get("log", ""))[-LOG_CHARS:].strip()
    why = f"the probe gave no usable answer (exit code {reply.get('exit')}): {log}"
    answer = reply.get("answer")
    raw = answer.encode() if isinstance(answer, str) else b""
    return parse_answer(raw, labels, targets, head_rows, why)


def parse_answer(
    raw: bytes, labels: list[str], targets: tuple[float, ...], head_rows: int, why_unusable: str
) -> dict[str, ModelScore]:
    """The probe's answer, trusted for nothing: it passed through student code."""
    try:
        answer = json.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return {label: ModelScore(False, why_unusable) for label in labels}
    return {label: _validate(answer.get(label), targets, head_rows) for label in labels}


def _validate(entry: object, targets: tuple[float, ...], head_rows: int) -> ModelScore:
    if not isinstance(entry, dict):
        return ModelScore(False, "the probe's answer for this model is missing or malformed")
    if entry.get("ok") is not True:
        error = entry.get("error")
        return ModelScore(False, error[:ERROR_CHARS] if isinstance(error, str) else "loading or predicting failed")
    predictions = entry.get("predictions")
    if not _finite_list(predictions):
        return ModelScore(False, "the probe's answer holds values that are not finite numbers")
    if len(predictions) != len(targets):
        return ModelScore(False, f"expected {len(targets)} predictions, got {len(predictions)}")
    predictions = [float(value) for value in predictions]
    rmse, r2 = _rmse_and_r2(targets, predictions)
    return ModelScore(True, "", rmse, r2, predictions[:head_rows], predictions)


def _rmse_and_r2(targets: tuple[float, ...], predictions: list[float]) -> tuple[float, float]:
    import numpy as np

    truth, predicted = np.asarray(targets), np.asarray(predictions)
    squared_error = float(np.sum((truth - predicted) ** 2))
    return math.sqrt(squared_error / len(truth)), 1.0 - squared_error / float(np.sum((truth - truth.mean()) ** 2))


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite_list(value: object) -> bool:
    return isinstance(value, list) and all(_finite_number(item) for item in value)


if __name__ == "__main__":
    serve()
