"""Both ends of the probe: load a student's models and predict the canonical test split, never in the grader.

Loading a model runs code the student controls (pickles, custom pyfunc classes), so the grader never does it
itself. One probe server per grading process, ``python -I grader/probe.py --dataset ... --test-size ...
--random-state ...``, runs in the sandbox: it imports MLflow and the course's flavors and splits the data once
(seconds of CPU), then serves one request, all the models of one submission, at a time.

What keeps one request's code away from the next is the kernel, not a sweep of leftovers. For each request the
server forks an intermediate process, in which no student code ever runs; it is made right after the previous
reply, so that a request does not wait for it. It unshares a user, mount, pid and ipc namespace and maps its own
uid and gid to themselves (so nothing in there is root), mounts fresh size-capped tmpfs over every place of the
sandbox a process may write (``/tmp``, ``/dev/shm``, the server's home, ``/dev`` when it is writable), binding
back what was mounted below them (the inbox, the kit, the devices), and covers the ``/proc`` entries of the
sandbox's own processes. Then it forks the worker: pid 1 of the new pid namespace, in a session of its own,
without any capability, waiting for the request. The worker loads the models from the inbox and predicts,
reporting each model on a pipe as soon as it is done; the intermediate reads that pipe, enforces the time
limits, and in every case ends with SIGKILL to the worker: when a pid namespace's init dies, the kernel kills
every process in it, whatever it did (new sessions, double forks, a thread group whose leader exited), and the
intermediate's wait for the worker returns only once they are all gone. Only then does the intermediate hand
what it read to the server, through a memfd the server created, and the server reply. A model that kills its
worker, hangs or floods the pipe costs only itself: the models after it get a new worker, in new namespaces.
The grader copies the next submission's models into the inbox only after the reply, and every request starts
from fresh mounts: nothing a model starts outlives its request, and nothing of a later request is within reach
of an earlier one.

Where the kernel refuses unprivileged user namespaces, the server says so in its first line and then forks the
worker as a plain child; the grader then replaces the whole sandboxed server after every request (its pid
namespace dies with it), at the price of a warm-up per submission. Without the sandbox at all the worker is a
plain process of the grader's user, ended by process group only (see SECURITY.md).

Once warm, the server writes ``{"targets": [...], "namespaces_problem": null | "why"}``: the split's true values,
sent before any student code ran. Request (one JSON line on stdin): ``{"id", "models": {"KEY": "FOLDER"},
"cpus": [...], "seconds"}``; ``seconds`` is the time for all its models. Reply (one JSON line on stdout):
``{"id", "answer", "log"}``, where ``answer`` is the text of ``{"KEY": {"ok", "error", "predictions"}}``, one
entry per model (what the worker wrote for it, or why it has none), and ``log`` the tail of what it printed.

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
import functools
import hashlib
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
# An answer's size follows from the number of models and of test rows: the longest repr of a finite float is 24
# characters, then ", "; an error message is at most ERROR_CHARS characters, each escaped in at most 6 bytes.
BYTES_PER_PREDICTION = 32
BYTES_PER_ERROR = 8 * ERROR_CHARS
HELLO_BYTES = 4_000_000  # the targets: 32 bytes each, for a test split of up to 125,000 rows
MAX_MODEL_FILES = 10_000
MAX_MODEL_DEPTH = 32  # an MLflow model nests 3 folders deep; the limit bounds the copy's open descriptors
# While a model loads, this much of the request's time stays kept for each model after it, so that one model
# that hangs does not cost the others their scores (with many models, less: see _supervise).
MODEL_RESERVE_SECONDS = 2.0
# The course's flavors, imported once by the server so that no worker pays for them. A model of another
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
REPLY_SECONDS = 10  # beyond the request's own time, for the server to clean up and reply
# The places of the sandbox a process may write, besides the server's home: each that is writable gets a fresh
# tmpfs per request. /dev is writable when bwrap runs without root: its tmpfs then belongs to the grader's uid.
SCRATCH_PLACES = ("/dev", "/dev/shm", "/tmp")
CLOSE_FROM = 4  # a worker keeps stdin, its log as stdout and stderr, and its answer pipe as descriptor 3
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


# The server: runs in the sandbox.


def warm_up(x_test) -> None:
    """Import the flavors, then save and load one small model of the server's own: what MLflow does lazily on a
    first load (its map of the installed packages, to check a model's requirements: 0.7 s) is done here once."""
    import importlib

    for module in WARM_MODULES:
        with contextlib.suppress(ImportError):  # e.g. xgboost not installed: its models cannot load anyway
            importlib.import_module(module)
    import yaml

    if yaml.__with_libyaml__:
        # MLflow parses a model's MLmodel file three times per load with yaml.safe_load, in pure Python. libyaml's
        # parser builds the same safe objects in C: ten homework models load and predict in 0.35 s, not 0.50 s.
        yaml.safe_load = functools.partial(yaml.load, Loader=yaml.CSafeLoader)
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


@dataclass(frozen=True)
class Setting:
    """What every request of this server shares."""

    x_test: object
    contained: bool  # per-request namespaces; False: plain workers
    scratch_mb: int  # the size of each fresh tmpfs


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--test-size", type=float, required=True)
    parser.add_argument("--random-state", type=int, required=True)
    parser.add_argument("--contain", action="store_true", help="give each request namespaces of its own")
    parser.add_argument("--scratch-mb", type=int, default=256, help="the size of each request's fresh tmpfs")
    args = parser.parse_args(argv)

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints of the imports land in the log
    _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # nothing can ptrace it or read its memory
    x_test, y_test = canonical_split(args.dataset, args.test_size, args.random_state)
    warm_up(x_test)
    setting = Setting(x_test, args.contain, args.scratch_mb)
    problem = _namespaces_problem(setting) if args.contain else None
    if problem:
        print(f"probe server: NO per-request namespaces ({problem}); plain workers", file=sys.stderr)
        setting = dataclasses.replace(setting, contained=False)
    if threading.active_count() != 1:  # fork copies only the calling thread: a lock held elsewhere would hang
        print(f"probe server: {threading.active_count()} threads before forking", file=sys.stderr)
    standby = _Standby.prepare(setting) if setting.contained else None
    # The true values, for the grader to score predictions with: sent before any student code ran here.
    replies.write(json.dumps({"targets": y_test.tolist(), "namespaces_problem": problem}) + "\n")
    replies.flush()
    for line in sys.stdin:
        reply, broken = _serve_one(json.loads(line), setting, standby)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if broken:  # the grader starts a fresh server, in a fresh sandbox, for the next submission
            break
        # The next request's namespaces, made now that this one's are gone: while the grader runs the next
        # notebook, not while it waits for a reply.
        standby = _Standby.prepare(setting) if setting.contained else None
    os._exit(0)  # tearing down MLflow's imports takes seconds


def _namespaces_problem(setting: Setting) -> str | None:
    """Why this kernel does not let the server give a request namespaces of its own, found with an empty one."""
    empty = _Standby.prepare(setting).run(_empty_order(10))
    return empty.setup_error or (f"an empty worker ended with exit code {empty.exit}" if empty.exit else None)


def _empty_order(seconds: float) -> dict:
    return {"models": {}, "cpus": None, "seconds": seconds, "deadline": time.monotonic() + seconds}


@dataclass
class Round:
    """One worker's run over some of a request's models, as its supervisor saw it."""

    finished: dict[str, bytes] = field(default_factory=dict)  # key -> the line the worker wrote for it
    current: str | None = None  # the model it was loading when it ended
    exit: int | None = None
    timed_out: bool = False
    too_long: bool = False  # a line longer than a model's answer may be
    log: str = ""
    setup_error: str | None = None  # the request could not be isolated: no worker ran


def _serve_one(request: dict, setting: Setting, standby: _Standby | None) -> tuple[dict, bool]:
    """Reply to one request; and whether the server must end after it (its namespaces could not be made)."""
    models, seconds = request["models"], request["seconds"]
    deadline = time.monotonic() + seconds
    answers: dict[str, str] = {}
    log, broken = "", False
    # A worker that dies, hangs or overflows costs the model it was loading; the models after it get a new
    # worker (new namespaces) with the time left. Every round settles at least one model.
    while len(answers) < len(models):
        left = {key: folder for key, folder in models.items() if key not in answers}
        if time.monotonic() >= deadline:
            for key in left:
                answers[key] = _error(f"not loaded: the probe's {seconds} s for this submission's models ran out")
            break
        order = {"models": left, "cpus": request.get("cpus"), "seconds": seconds, "deadline": deadline}
        if setting.contained:
            outcome = (standby or _Standby.prepare(setting)).run(order)
            standby = None
        else:
            outcome = _plain_round(setting, order)
        log = outcome.log or log
        if outcome.setup_error:
            for key in left:
                answers[key] = _error(f"the probe could not isolate this submission's models: {outcome.setup_error}")
            broken = True
            break
        answers.update({key: _entry_text(line) for key, line in outcome.finished.items()})
        culprit = outcome.current or next((key for key in left if key not in answers), None)
        if culprit is not None:
            answers[culprit] = _error(_why_unfinished(outcome, seconds, len(setting.x_test)))
    if standby is not None:  # unused (no time was left): its worker ends without loading anything
        standby.run(_empty_order(1))
    text = "{" + ", ".join(f"{json.dumps(key)}: {answers[key]}" for key in models) + "}"
    return {"id": request["id"], "answer": text, "log": log[-LOG_CHARS:]}, broken


def _why_unfinished(outcome: Round, seconds: int, rows: int) -> str:
    if outcome.too_long:
        return f"its answer was longer than the {answer_bytes(1, rows):,} bytes the probe takes for a model"
    if outcome.timed_out:
        return f"loading and predicting took too long: the probe has {seconds} s for all of this submission's models"
    log = outcome.log[-LOG_CHARS:].strip()
    return f"the probe's worker ended (exit code {outcome.exit}) before it answered for this model: {log}"


def _entry_text(line: bytes) -> str:
    """The worker's line for one model, if it is one JSON object: it is then embedded as it is in the answer."""
    try:
        text = line.decode()
        if isinstance(json.loads(text), dict):
            return text
    except (ValueError, RecursionError):
        pass
    return _error("the probe's answer for this model is not a JSON object")


def _error(message: str) -> str:
    return json.dumps({"ok": False, "error": message[:ERROR_CHARS]})


def answer_bytes(models: int, rows: int) -> int:
    """The most an answer for ``models`` models of ``rows`` predictions may take."""
    return models * (rows * BYTES_PER_PREDICTION + BYTES_PER_ERROR)


@dataclass
class _Standby:
    """An intermediate, its namespaces made and its worker forked, that waits for its order: a request's
    models, cpus, seconds and deadline. Forking a warm server twice and making the mounts takes tens of
    milliseconds; made ahead, it costs a request nothing."""

    intermediate: int
    orders: int  # the pipe the server writes the order to
    result: int  # the memfd the intermediate writes the round to

    @classmethod
    def prepare(cls, setting: Setting) -> _Standby:
        result = os.memfd_create("probe-round")
        orders_read, orders_write = os.pipe()
        intermediate = os.fork()
        if intermediate == 0:
            os.close(orders_write)
            _intermediate(setting, orders_read, result)  # never returns
        os.close(orders_read)
        return cls(intermediate, orders_write, result)

    def run(self, order: dict) -> Round:
        with contextlib.suppress(BrokenPipeError):  # it could not make the namespaces: its round says why
            _write_all(self.orders, json.dumps(order).encode() + b"\n")
        os.close(self.orders)
        # No time limit of its own: the intermediate enforces the order's, and should it ever hang, the grader
        # kills this whole sandbox after the request's time and REPLY_SECONDS.
        _, status = os.waitpid(self.intermediate, 0)
        try:
            return _read_round(self.result) or Round(
                setup_error=f"the intermediate process ended with exit code {os.waitstatus_to_exitcode(status)}"
            )
        finally:
            os.close(self.result)


def _intermediate(setting: Setting, orders: int, result: int) -> None:
    """Trusted: make the namespaces, fork the worker into them, hand it its order, supervise it, and write the
    round to ``result``. Never returns."""
    code = 1
    try:
        try:
            _contain(setting.scratch_mb)
        except Exception as error:  # the kernel refused a step: no worker runs, the server says why
            _write_round(result, Round(setup_error=f"{type(error).__name__}: {error}"))
            code = 0
            return
        start_read, start_write = os.pipe()
        answers_read, answers_write = os.pipe()
        log_read, log_write = os.pipe()
        worker = os.fork()
        if worker == 0:
            _worker(setting, start_read, answers_write, log_write, Path.home())  # never returns
        for descriptor in (start_read, answers_write, log_write):
            os.close(descriptor)
        order = _read_line(orders)  # waits for the request; empty when the server ended
        with contextlib.suppress(BrokenPipeError):
            _write_all(start_write, order + b"\n")
        os.close(start_write)
        order = json.loads(order or b'{"models": {}, "deadline": 0}')
        _write_round(result, _supervise(worker, answers_read, log_read, order, answer_bytes(1, len(setting.x_test))))
        code = 0
    finally:
        os._exit(code)


def _plain_round(setting: Setting, order: dict) -> Round:
    """Run a worker as a plain child in a session of its own (no namespaces here); it ends by process group."""
    scratch = Path(tempfile.mkdtemp(prefix="probe-"))
    try:
        start_read, start_write = os.pipe()
        answers_read, answers_write = os.pipe()
        log_read, log_write = os.pipe()
        worker = os.fork()
        if worker == 0:
            _worker(setting, start_read, answers_write, log_write, scratch)  # never returns
        for descriptor in (start_read, answers_write, log_write):
            os.close(descriptor)
        with contextlib.suppress(BrokenPipeError):
            _write_all(start_write, json.dumps(order).encode() + b"\n")
        os.close(start_write)
        return _supervise(worker, answers_read, log_read, order, answer_bytes(1, len(setting.x_test)))
    finally:
        # rm, not shutil.rmtree: on Python 3.11 that recurses, and fails past 1,000 levels a model can make.
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(scratch)], stdin=subprocess.DEVNULL, check=False)


def _write_all(descriptor: int, data: bytes) -> None:
    while data:
        data = data[os.write(descriptor, data) :]


def _read_line(descriptor: int) -> bytes:
    """One line, its writer's only one, without the newline; empty when the writer closed without one."""
    chunks = []
    while (chunk := os.read(descriptor, 1 << 16)) and not chunk.endswith(b"\n"):
        chunks.append(chunk)
    return b"".join([*chunks, chunk]).rstrip(b"\n")


def _contain(scratch_mb: int) -> None:
    """Move this process into new user, mount, pid and ipc namespaces; its next child is pid 1 there."""
    libc = _libc()
    places = sorted({*(Path(place) for place in SCRATCH_PLACES if os.access(place, os.W_OK)), Path.home()})
    # Mounts below a place (the inbox, the kit's venv when it lies under /tmp, /dev's devices) stay reachable
    # through a descriptor once a tmpfs hides them, and are bound back from it; so are a place's links (/dev/fd).
    mounts = _mount_points()
    below = {place: _topmost(mount for mount in mounts if _below(mount, place, places)) for place in places}
    links = {
        place: [(item.name, os.readlink(item)) for item in os.scandir(place) if item.is_symlink()] for place in places
    }
    modes = {place: stat.S_IMODE(place.stat().st_mode) for place in places}
    # The sandbox's own processes, threads included (/proc/TID answers even when not listed): bwrap, the
    # sandbox's supervisor, the server and this process.
    tasks = [f"/proc/{tid}" for pid in os.listdir("/proc") if pid.isdigit() for tid in _tasks_of(pid)]
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    # The /proc files of a process that is not dumpable belong to root, so the maps can only be written while it
    # is; no student code exists anywhere while it is (the last request's namespaces are gone).
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")  # not root inside: an exec cannot regain capabilities
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in the new mount namespace: a mount can only be bound from the namespace it belongs to.
    handles = {mount: os.open(mount, os.O_PATH | os.O_NOFOLLOW) for mounts in below.values() for mount in mounts}
    for place in places:  # outer ones first: the home below /tmp is made again in the fresh /tmp
        place.mkdir(mode=0o755, parents=True, exist_ok=True)
        _mount("tmpfs", str(place), "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode={modes[place]:o}")
        for name, target in links[place]:
            os.symlink(target, place / name)
        for mount in below[place]:
            mount.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if stat.S_ISDIR(os.fstat(handles[mount]).st_mode):
                mount.mkdir(exist_ok=True)
            else:
                mount.touch()
            _mount(f"/proc/self/fd/{handles[mount]}", str(mount), None, MS_BIND | MS_REC)
            os.close(handles[mount])
    # A fresh /proc is refused here (bwrap's read-only covers over parts of its /proc make a new one "too
    # revealing" to the kernel), so the sandbox's processes are covered instead: through /proc/PID a worker could
    # otherwise reach a dumpable one's memory or root folder.
    for task in tasks:
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            _mount("tmpfs", task, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")


def _below(mount: Path, place: Path, places: list[Path]) -> bool:
    """Whether ``mount`` lies below ``place`` and not in another place, which gets a tmpfs of its own."""
    inner = [other for other in places if other != place and other.is_relative_to(place)]
    return mount != place and mount.is_relative_to(place) and not any(mount.is_relative_to(other) for other in inner)


def _topmost(mounts) -> list[Path]:
    """The mounts not below another of them: binding those back recursively brings the others along."""
    mounts = sorted(set(mounts))
    return [mount for mount in mounts if not any(mount != other and mount.is_relative_to(other) for other in mounts)]


def _tasks_of(pid: str) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:  # it ended meanwhile
        return []


def _worker(setting: Setting, start: int, answers: int, log: int, home: Path) -> None:
    """Wait for the order on ``start``, then load and predict each of its models, reporting each on ``answers``
    as soon as it is done. Never returns."""
    code = 1
    try:
        if setting.contained:
            _drop_capabilities()
        # A session of its own: kill(0, ...) signals the caller's whole process group, even those of its members
        # outside the caller's pid namespace, such as the server.
        os.setsid()
        order = _read_line(start)
        if not order:  # the server ended, or had no model for it
            code = 0
            return
        order = json.loads(order)
        if order["cpus"]:
            os.sched_setaffinity(0, order["cpus"])
        resource.setrlimit(resource.RLIMIT_CPU, (order["seconds"], order["seconds"]))
        nothing = os.open(os.devnull, os.O_RDONLY)
        for target, source in ((0, nothing), (1, log), (2, log), (3, answers)):
            os.dup2(source, target)
        os.closerange(CLOSE_FROM, 1 << 16)  # the server's pipes and memfds: no model may reach them
        scratch = "/tmp" if setting.contained else home  # the fresh /tmp, or a folder of its own
        os.environ.update(TMPDIR=str(scratch), HOME=str(home))
        tempfile.tempdir = None
        os.chdir(home)
        for key, folder in order["models"].items():
            _send({"loading": key})
            _send(predict_with(folder, setting.x_test))
        code = 0
    finally:
        with contextlib.suppress(Exception):  # its last prints, for the log
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _send(message: dict) -> None:
    data = (json.dumps(message, allow_nan=False) + "\n").encode()
    while data:
        data = data[os.write(3, data) :]


def _drop_capabilities() -> None:
    """Empty every capability set (the worker had all of them in its user namespace) and keep no_new_privs."""
    libc = _libc()
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


class _Progress:
    """What a worker reported so far: a ``{"loading": KEY}`` line before each model, then one line, its result."""

    def __init__(self, keys: list[str], line_limit: int):
        self.keys, self.line_limit = keys, line_limit
        self.finished: dict[str, bytes] = {}
        self.current: str | None = None
        self.started = 0
        self.too_long = False
        self.partial = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self._take(line)
        self.too_long = self.too_long or len(self.partial) > self.line_limit

    def deadline(self, request_deadline: float, reserve: float) -> float:
        """The model being loaded may run until the time kept for the models after it."""
        return request_deadline - reserve * (len(self.keys) - max(self.started, 1))

    def _take(self, line: bytes) -> None:
        if len(line) > self.line_limit:
            self.too_long = True
        elif line.startswith(b'{"loading": '):
            with contextlib.suppress(ValueError, RecursionError, AttributeError):
                key = json.loads(line).get("loading")
                if key in self.keys and key not in self.finished and key != self.current:
                    self.current = key
                    self.started += 1
        elif self.current is not None:
            self.finished[self.current] = line
            self.current = None


def _supervise(worker: int, answers: int, log: int, order: dict, line_limit: int) -> Round:
    """Read the worker's answers and log until it ends or overruns; then SIGKILL it in every case and reap it."""
    keys, deadline = list(order["models"]), order["deadline"]
    reserve = min(MODEL_RESERVE_SECONDS, order.get("seconds", 0) / (2 * max(len(keys), 1)))
    progress = _Progress(keys, line_limit)
    tail = bytearray()

    def keep_tail(chunk: bytes) -> None:
        tail.extend(chunk)
        del tail[: -4 * LOG_CHARS]

    readers = {answers: progress.feed, log: keep_tail}
    handle = os.pidfd_open(worker)
    timed_out = False
    try:
        while not progress.too_long:
            remaining = progress.deadline(deadline, reserve) - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([handle, *readers], [], [], remaining)
            for descriptor in ready:
                if descriptor in readers:
                    chunk = os.read(descriptor, 1 << 20)
                    if chunk:
                        readers[descriptor](chunk)
                    else:
                        del readers[descriptor]
            if handle in ready:  # its thread group is empty: as pid 1, it took its whole namespace with it
                break
    finally:
        # Pid 1 of its namespace: its death ends every process in there. A plain worker's group goes with it.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(handle, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker, signal.SIGKILL)
        _, status = os.waitpid(worker, 0)
        os.close(handle)
    for descriptor, reader in readers.items():  # what it wrote just before it ended
        _drain(descriptor, reader, len(keys) * line_limit)
    for descriptor in (answers, log):
        os.close(descriptor)
    return Round(
        finished=progress.finished,
        current=progress.current,
        exit=os.waitstatus_to_exitcode(status),
        timed_out=timed_out,
        too_long=progress.too_long,
        log=tail.decode(errors="replace"),
    )


def _drain(descriptor: int, reader, limit: int) -> None:
    """Read what is left, without waiting: a plain worker's leftovers may still hold the pipe open."""
    os.set_blocking(descriptor, False)
    with contextlib.suppress(BlockingIOError):
        while limit > 0 and (chunk := os.read(descriptor, 1 << 20)):
            reader(chunk)
            limit -= len(chunk)


def _write_round(descriptor: int, outcome: Round) -> None:
    """A header line, then the worker's line for each finished model; such lines hold no newline."""
    header = {**dataclasses.asdict(outcome), "finished": list(outcome.finished)}
    data = json.dumps(header).encode() + b"\n" + b"".join(line + b"\n" for line in outcome.finished.values())
    while data:
        data = data[os.write(descriptor, data) :]


def _read_round(descriptor: int) -> Round | None:
    size = os.fstat(descriptor).st_size
    if not size:
        return None
    header, *lines = os.pread(descriptor, size, 0).split(b"\n")
    fields = json.loads(header)
    fields["finished"] = dict(zip(fields["finished"], lines, strict=False))
    return Round(**fields)


@functools.cache
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    return libc


def _mount(source: str | None, target: str, kind: str | None, flags: int, options: str | None = None) -> None:
    encoded = [None if text is None else text.encode() for text in (source, target, kind)]
    _check(_libc().mount(*encoded, flags, None if options is None else options.encode()), f"mount {target}")


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _mount_points() -> list[Path]:
    with open("/proc/self/mountinfo") as mountinfo:
        fields = [line.split()[4] for line in mountinfo]
    return [Path(re.sub(r"\\([0-7]{3})", lambda escape: chr(int(escape[1], 8)), field)) for field in fields]


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


@dataclass(frozen=True)
class Copied:
    size: int  # bytes copied
    digest: str  # of the folder's names, kinds and contents: equal digests, equal models


class ProbeService:
    """The grader's end of the probe server: starts it, hands it one submission's models at a time, validates."""

    def __init__(self, rubric):
        from grader import sandbox  # not at the top: the server runs this file as a script, without the grader

        self.rubric = rubric
        limits = dataclasses.replace(rubric.limits, wall_seconds=SERVER_WALL_SECONDS, cpu_threads=1)
        self.box = sandbox.create(limits)
        self.scratch_mb = sandbox.TMPFS_MB
        self.remove_tree = sandbox.remove_tree
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.lines: _Lines | None = None  # the server's stdout
        self.folder: Path | None = None  # holds inbox/, the models to load (read-only in the sandbox), and homes
        self.home: Path | None = None  # the running server's; each server gets a new one
        self.log = None  # the server's stderr, for the message when it fails
        self.fresh = True  # its first line, the targets, is still to be read
        self.targets: tuple[float, ...] = ()
        self.requests = self.starts = 0
        # How requests are kept apart; set from the server's first line when it differs from the sandbox's.
        self.isolation = "per-request namespaces" if self.box.isolated else f"none: {self.box.description}"
        self.server_per_request = False  # no namespaces per request: a fresh sandboxed server for each

    def start(self) -> None:
        """Launch the server (once): its imports run while the first notebook does."""
        with self.lock:
            self._ensure_running()

    def score(self, models: dict[str, tuple[Path, Path]], cpus: list[int] | None = None) -> dict[str, ModelScore]:
        """Load and predict each ``{label: (workdir, model folder inside it)}`` in one request; one submission at a
        time. Earlier labels are copied first, so they come first when the copy budget runs out."""
        if not models:
            return {}
        with self.lock:
            self._ensure_running()
            _empty(self.inbox)
            failed, request, same_as = self._copy(models)
            if not request:
                return failed
            folders = {str(index): folder for index, folder in enumerate(request.values())}
            reply = self._ask(folders, cpus)
            by_key = parse_reply(reply, list(folders), self.targets, self.rubric.split.prediction_rows)
            scores = {label: by_key[key] for label, key in zip(request, folders, strict=True)}
            if self.server_per_request:  # this one's pid namespace dies now; its successor warms up meanwhile
                self._stop()
                self._ensure_running()
        scores.update({label: dataclasses.replace(scores[first]) for label, first in same_as.items()})
        return {label: scores.get(label) or failed[label] for label in models}

    def _copy(
        self, models: dict[str, tuple[Path, Path]]
    ) -> tuple[dict[str, ModelScore], dict[str, str], dict[str, str]]:
        """Copy the models into the inbox: (their failures, {label: copy} to load, {label: label of the same
        bytes}). They share one budget, the memory one model may use: no model larger than that can load, and a
        submission may not make the grader copy more than that either."""
        failed, request, same_as, first_of = {}, {}, {}, {}
        left = limit = self.rubric.limits.memory_mb * 2**20
        for index, (label, (workdir, folder)) in enumerate(models.items()):
            destination = self.inbox / str(index)  # never the label: a logged model's id comes from the student
            try:
                copied = copy_model(workdir, folder, destination, left)
            except (OSError, ValueError) as error:
                shutil.rmtree(destination, ignore_errors=True)
                share = "" if left == limit else f" (the models before it left {left / 2**20:.1f} MB of it)"
                failed[label] = ModelScore(False, f"its files could not be taken for loading: {error}{share}")
                continue
            if copied.digest in first_of:  # the same files under another label: loaded once
                shutil.rmtree(destination)
                same_as[label] = first_of[copied.digest]
                continue
            left -= copied.size
            first_of[copied.digest] = label
            request[label] = str(destination)
        return failed, request, same_as

    @property
    def inbox(self) -> Path:
        return self.folder / "inbox"

    def close(self) -> None:
        with self.lock:
            self._stop()
            if self.folder is not None:
                self.remove_tree(self.folder)

    def _ask(self, models: dict[str, str], cpus: list[int] | None) -> dict | str:
        """The server's reply, or why there is none (then the server is restarted for the next submission)."""
        self.requests += 1
        seconds = self.rubric.probe_seconds
        request = {"id": self.requests, "models": models, "cpus": cpus, "seconds": seconds}
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            if self.fresh:
                self._hello(json.loads(self.lines.read(STARTUP_SECONDS, HELLO_BYTES)))
            # The answer is embedded as text: escaping at most triples it.
            limit = 3 * answer_bytes(len(models), len(self.targets)) + 8 * LOG_CHARS + 4096
            reply = json.loads(self.lines.read(seconds + REPLY_SECONDS, limit))
            if not isinstance(reply, dict) or reply.get("id") != request["id"]:
                raise ValueError("a reply to another request")
            return reply
        except (OSError, ValueError, TimeoutError) as error:
            why = f"the probe server failed ({type(error).__name__}: {error}): {self._log_tail()}"
            self._stop()
            return why

    def _hello(self, hello: object) -> None:
        self.targets = _targets(hello)
        self.fresh = False
        problem = hello.get("namespaces_problem")
        if self.box.isolated and problem and not self.server_per_request:
            self.server_per_request = True
            self.isolation = f"a fresh sandboxed server per submission (no per-request namespaces: {problem})"
            print(
                f"grader: WARNING: the probe cannot give each request namespaces of its own ({problem}); it "
                "restarts its sandbox after every submission instead, a warm-up of seconds each",
                file=sys.stderr,
            )

    def _ensure_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self._stop()
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="grader-probe-"))
            self.inbox.mkdir(mode=0o755)
            atexit.register(self.close)
        self.starts += 1
        self.home = self.folder / f"home-{self.starts}"  # nothing a dead server's sandbox wrote meets the next
        self.box.prepare(self.home)
        split = self.rubric.split
        argv = [
            # A script, not -m grader.probe: the server has no use for the grader package's imports. -I keeps
            # its working directory and this folder (grader/inspect.py would shadow the standard library's) off
            # sys.path.
            *(sys.executable, "-I", str(Path(__file__).resolve())),
            *("--dataset", split.dataset, "--test-size", str(split.test_size)),
            *("--random-state", str(split.random_state), "--scratch-mb", str(self.scratch_mb)),
            *(["--contain"] if self.box.isolated else []),
        ]
        env = self.box.environment(self.home)
        env.pop("MLFLOW_TRACKING_URI", None)  # models load from folders: no store is ever opened
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
        self.fresh = True
        self.process = subprocess.Popen(
            self.box.command(argv, self.home, read_only=(self.inbox,)),
            cwd=self.home,
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
        self.box.cleanup(self.home)
        self.remove_tree(self.home)  # without namespaces per request, student code wrote there
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


def _empty(folder: Path) -> None:
    """Remove what the grader copied into ``folder``; the folder itself stays, bound into the sandbox."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def copy_model(workdir: Path, folder: Path, destination: Path, budget: int) -> Copied:
    """Copy ``folder`` (inside ``workdir``) to ``destination``: folders and regular files only, never through a
    link, at most ``budget`` bytes, MAX_MODEL_FILES entries and MAX_MODEL_DEPTH levels. The notebook made that
    tree: a link in it could point at any file of the grading machine, and a fifo would block the copy forever."""
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


def _copy_tree(top: int, destination: Path, budget: int) -> Copied:
    """Depth first, holding one descriptor per level of the folder being copied and closing each, whatever
    happens; a folder's listing is read whole (and sorted, for the digest) before anything below it is opened."""
    digest = hashlib.sha256()
    copied = entries = 0
    destination.mkdir()
    levels = [(os.dup(top), destination, [])]  # (folder, its copy, its entries still to copy)
    try:
        levels[0][2].extend(_listing(levels[0][0]))
        entries += len(levels[0][2])
        while levels:
            descriptor, target, pending = levels[-1]
            if not pending:
                os.close(levels.pop()[0])
                continue
            name, kind = pending.pop()
            path = str((target / name).relative_to(destination)).encode(errors="surrogateescape")
            if stat.S_ISDIR(kind):
                if len(levels) > MAX_MODEL_DEPTH:
                    raise ValueError(f"the model's folders nest deeper than {MAX_MODEL_DEPTH} levels")
                digest.update(b"d" + path + b"\0")
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
                levels.append((inner, target / name, []))
                (target / name).mkdir()
                listing = _listing(inner, MAX_MODEL_FILES - entries)
                levels[-1][2].extend(listing)
                entries += len(listing)
            elif stat.S_ISREG(kind):
                digest.update(b"f" + path + b"\0")
                copied += _copy_file(descriptor, name, target / name, budget - copied, digest)
    finally:
        for descriptor, _, _ in levels:
            os.close(descriptor)
    return Copied(copied, digest.hexdigest())


def _listing(descriptor: int, room: int = MAX_MODEL_FILES) -> list[tuple[str, int]]:
    """A folder's entries, (name, mode) in reverse order of name (they are popped), at most ``room`` of them."""
    found = []
    with os.scandir(descriptor) as entries:
        for entry in entries:
            if len(found) >= room:
                raise ValueError(f"the model has more than {MAX_MODEL_FILES} files")
            found.append((entry.name, entry.stat(follow_symlinks=False).st_mode))
    return sorted(found, reverse=True)


def _copy_file(directory: int, name: str, target: Path, budget: int, digest) -> int:
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    with os.fdopen(source, "rb") as stream, target.open("wb") as sink:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ValueError(f"{name} is not a regular file")
        while chunk := stream.read(1 << 20):
            budget -= len(chunk)
            if budget < 0:
                raise ValueError("the model's files are larger than the memory it may use")
            sink.write(chunk)
            digest.update(chunk)
        digest.update(b"\0%d\0" % sink.tell())
        return sink.tell()


class _Lines:
    """The server's stdout, a line at a time, each within a time limit and a byte limit."""

    def __init__(self, stream):
        self.descriptor = stream.fileno()
        self.buffer = bytearray()

    def read(self, seconds: float, limit: int) -> bytes:
        deadline = time.monotonic() + seconds
        searched = 0
        while (end := self.buffer.find(b"\n", searched)) < 0:
            searched = len(self.buffer)
            if searched > limit:
                raise ValueError("an oversized reply")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.descriptor], [], [], remaining)[0]:
                raise TimeoutError(f"no answer within {seconds:.0f} s")
            chunk = os.read(self.descriptor, 1 << 20)
            if not chunk:
                raise OSError("the probe server ended")
            self.buffer += chunk
        if end > limit:
            raise ValueError("an oversized reply")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
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
    log = str(reply.get("log", ""))[-LOG_CHARS:].strip()
    answer = reply.get("answer")
    raw = answer.encode() if isinstance(answer, str) else b""
    return parse_answer(raw, labels, targets, head_rows, f"the probe gave no usable answer: {log}")


def parse_answer(
    raw: bytes, labels: list[str], targets: tuple[float, ...], head_rows: int, why_unusable: str
) -> dict[str, ModelScore]:
    """The probe's answer, trusted for nothing: it passed through student code."""
    try:
        limit = answer_bytes(len(labels), len(targets)) + 16 * len(labels)  # and the keys
        answer = json.loads(raw) if len(raw) <= limit else None
    except (ValueError, RecursionError):
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


def _finite_list(value: object) -> bool:
    # type(), not isinstance(): True is an int too. JSON makes no other subclasses of int or float.
    return isinstance(value, list) and all(type(item) in (int, float) and math.isfinite(item) for item in value)


if __name__ == "__main__":
    serve()
