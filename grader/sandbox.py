"""Run student-controlled code (the notebook kernel, every load of a student's model) isolated and with limits.

Contract used by the execute and inspect stages:
    sandbox = create(limits)
    sandbox.prepare(workdir)                  # before anything runs in workdir
    argv = sandbox.command(argv, workdir)     # launch this instead of argv, with cwd=workdir,
                                              #   env=sandbox.environment(workdir), start_new_session=True;
                                              #   read_only=(folder, ...) shows more folders, unwritable;
                                              #   writable=(folder, ...) shows more, writable, at the same path
    sandbox.cleanup(workdir)                  # after killing the process group: ends any straggler
    sandbox.isolated / sandbox.description    # reported in every result, loudly when not isolated

With bubblewrap (``bwrap``) the code runs in its own mount, pid, network, ipc and uts namespaces: it sees the kit's
environment read-only, the data set cache read-only, a private /tmp, and writes only its working directory; it
has no network at all, loopback included. As root, bwrap does the mounts and the code then drops to a uid of its
own (one per working directory, so one submission's fork bomb cannot eat another's process budget). Without
bwrap, or when its self-test fails, the same limits apply to a plain process and ``description`` starts "OFF:".
``GRADER_SANDBOX=off|auto|bwrap`` forces the choice (``bwrap`` refuses to fall back).

The same file is the entry point inside the sandbox: ``python -I -S sandbox.py CONFIG ARGV...`` hands the working
directory to the sandbox uid, sets resource limits, drops privileges, runs ARGV and enforces the wall clock. It
ignores SIGINT itself (ARGV still gets it): an interrupt meant for the student's program must not end, or print a
traceback from, the process that supervises it.
Only the standard library may be imported at module level, because that entry runs with ``-S`` for speed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "GRADER_SANDBOX"
# Sandbox uids come from a range no distribution hands out to people or daemons.
UID_BASE = 200_000
UID_SPAN = 100_000
# Every sandboxed process carries this variable, so stragglers can be found even without a uid of their own.
MARKER_VAR = "GRADER_SANDBOX_WORKDIR"
SANDBOX_DATA_HOME = "/var/lib/grader/scikit_learn_data"
KILL_WAIT_SECONDS = 5  # how long cleanup waits for killed processes to be gone
TMPFS_MB = 256  # private /tmp and /dev/shm; tmpfs is RAM that no rlimit counts, so it is capped here
# RLIMIT_DATA is the memory cap: it counts private writable memory (heap, anonymous mmap) but not address space
# merely reserved. RLIMIT_AS counts reservations too (glibc arenas, thread stacks, library mappings) and is the
# backstop for shared anonymous memory, which RLIMIT_DATA misses. Measured, a script that trains a random forest
# on California Housing and logs and registers it with MLflow peaks at 0.66 GB data, 1.4 GB address space.
ADDRESS_SPACE_HEADROOM_MB = 2048
ROOT_PHASE_CAPABILITIES = ("CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID")
REPO = Path(__file__).resolve().parents[1]
KIT_DIRS = ("grader", "coursekit", "datasets")  # never the whole repo: homework/ holds the solution and rubric
ETC_FILES = (
    *("passwd", "group", "nsswitch.conf", "hosts", "localtime", "timezone", "mime.types", "os-release"),
    *("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates"),
)


@dataclass(frozen=True)
class Limits:
    wall_seconds: int = 600  # whole notebook
    cell_seconds: int = 300
    memory_mb: int = 2048
    max_processes: int = 256  # threads count too (RLIMIT_NPROC)
    output_bytes: int = 100_000  # text kept per cell output in the saved notebook and the report
    file_mb: int = 1024  # largest single file student code may write
    cpu_threads: int = 1  # BLAS/OpenMP threads, so parallel jobs do not oversubscribe the cores


class Sandbox:
    """Plain process isolation: own session and process group, resource limits, a wall clock; nothing more."""

    isolated = False

    def __init__(self, limits: Limits, reason: str = "no sandbox tool in use"):
        self.limits = limits
        self.description = (
            f"OFF: {reason}; student code runs as a plain process of the grader's user with resource limits only "
            "(it can read the grader's files and reach the network)"
        )

    def prepare(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._scratch(workdir).mkdir(exist_ok=True)

    def command(
        self, argv: list[str], workdir: Path, read_only: tuple[Path, ...] = (), writable: tuple[Path, ...] = ()
    ) -> list[str]:
        return self._entry(argv, (workdir, *writable), uid=None, own_namespace=False)

    def environment(self, workdir: Path) -> dict[str, str]:
        """A fresh environment: nothing of the grader's (tokens, credentials) leaks into student code."""
        threads = str(self.limits.cpu_threads)
        scratch = self._scratch(workdir)
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "USER": "student",  # getpass.getuser() (MLflow's run user) reads this before the passwd file
            "LOGNAME": "student",
            "LANG": "C.UTF-8",
            "TMPDIR": str(scratch),
            "MPLCONFIGDIR": str(scratch / "matplotlib"),
            "IPYTHONDIR": str(scratch / "ipython"),
            "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "SCIKIT_LEARN_DATA": self._data_home(),
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db",
            MARKER_VAR: str(workdir),
        }

    def cleanup(self, workdir: Path) -> None:
        """Kill every process still running for ``workdir`` (call after killing the launched process group)."""
        _kill_matching(lambda pid: _environ_has_marker(pid, workdir))

    def _data_home(self) -> str:
        return str(host_data_home())

    def _scratch(self, workdir: Path) -> Path:
        # Not the shared /tmp: a startup file one student drops in $IPYTHONDIR would run in the next one's kernel.
        return workdir / ".scratch"

    def _entry(self, argv: list[str], writable: tuple[Path, ...], uid: int | None, own_namespace: bool) -> list[str]:
        limits = self.limits
        # The pipeline's own timeouts fire first; the sandbox's wall clock is the backstop for what they miss.
        grace = min(30, max(5, limits.wall_seconds // 10))
        config = {
            "uid": uid,
            "writable": [str(folder) for folder in writable],
            "own_namespace": own_namespace,
            "wall_seconds": limits.wall_seconds + grace,
            "rlimits": {
                "RLIMIT_DATA": limits.memory_mb * 2**20,
                "RLIMIT_AS": (limits.memory_mb + ADDRESS_SPACE_HEADROOM_MB) * 2**20,
                "RLIMIT_NPROC": limits.max_processes,
                "RLIMIT_FSIZE": limits.file_mb * 2**20,
                "RLIMIT_CORE": 0,
                "RLIMIT_NOFILE": 4096,
                "RLIMIT_CPU": limits.wall_seconds * max(limits.cpu_threads, 1) + grace,
            },
        }
        return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), json.dumps(config), *argv]


class BubblewrapSandbox(Sandbox):
    """bwrap namespaces around the plain limits; as root, also a uid of the sandbox's own."""

    isolated = True

    def __init__(self, limits: Limits, bwrap: str):
        super().__init__(limits)
        self.bwrap = bwrap
        self.as_root = os.geteuid() == 0
        who = f"uid {UID_BASE}+ (one per submission)" if self.as_root else "the grader's uid in a user namespace"
        self.description = (
            f"bubblewrap: runs as {who}; no network (loopback included); own pid/ipc/uts namespaces; "
            f"reads only the kit environment and data set; writes only its working directory; "
            f"limits: {limits.memory_mb} MB memory, {limits.max_processes} processes, {limits.wall_seconds} s wall"
        )

    def prepare(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            uid = sandbox_uid(workdir)
            _chown_tree(workdir, uid)
            workdir.chmod(0o700)

    def command(
        self, argv: list[str], workdir: Path, read_only: tuple[Path, ...] = (), writable: tuple[Path, ...] = ()
    ) -> list[str]:
        uid = sandbox_uid(workdir) if self.as_root else None
        entry = self._entry(argv, (workdir, *writable), uid=uid, own_namespace=True)
        return [*self._bwrap_argv(workdir, read_only, writable), "--", *entry]

    def _data_home(self) -> str:
        return SANDBOX_DATA_HOME

    def _scratch(self, workdir: Path) -> Path:
        return Path("/tmp")  # private to this sandbox

    def cleanup(self, workdir: Path) -> None:
        uid = sandbox_uid(workdir)
        _kill_matching(lambda pid: (self.as_root and _uid_of(pid) == uid) or _environ_has_marker(pid, workdir))

    def _bwrap_argv(
        self, workdir: Path, read_only: tuple[Path, ...] = (), writable: tuple[Path, ...] = ()
    ) -> list[str]:
        tmpfs = str(TMPFS_MB * 2**20)
        args = [self.bwrap, "--die-with-parent", "--new-session"]
        args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--hostname", "sandbox"]
        if self.as_root:
            # The entry needs these to enter the sandbox uid's 0700 workdir, hand it over and drop to that uid;
            # it keeps none of them afterwards.
            args += ["--cap-drop", "ALL"]
            for capability in ROOT_PHASE_CAPABILITIES:
                args += ["--cap-add", capability]
        # The private /tmp first: the kit (venv included) may itself live under /tmp, and a later tmpfs would hide it.
        args += ["--dev", "/dev", "--proc", "/proc"]
        args += ["--perms", "1777", "--size", tmpfs, "--tmpfs", "/tmp"]
        args += ["--perms", "1777", "--size", tmpfs, "--tmpfs", "/dev/shm"]
        args += _system_binds()
        for path in _python_roots():
            args += ["--ro-bind", str(path), str(path)]
        for name in KIT_DIRS:
            if (REPO / name).is_dir():
                args += ["--ro-bind", str(REPO / name), str(REPO / name)]
        data_home = host_data_home()
        if data_home.is_dir():
            args += ["--ro-bind", str(data_home), SANDBOX_DATA_HOME]
        for path in (workdir, *writable):
            args += ["--bind", str(path), str(path)]
        for path in read_only:
            args += ["--ro-bind", str(path), str(path)]
        args += _open_parent_directories(args)
        # The root is bwrap's own tmpfs; read-only, nothing outside the mounts above (/etc/x, /work/x) is writable.
        args += ["--remount-ro", "/", "--chdir", str(workdir)]
        return args


def create(limits: Limits) -> Sandbox:
    """The strongest sandbox this machine supports, or the plain one with a loud reason."""
    choice = os.environ.get(ENV_VAR, "auto").strip().lower()
    if choice == "off":
        return Sandbox(limits, reason=f"disabled by {ENV_VAR}=off")
    if choice not in ("auto", "bwrap"):
        raise ValueError(f"{ENV_VAR} must be off, auto or bwrap, not {choice!r}")
    bwrap = shutil.which("bwrap")
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else _bwrap_self_test(bwrap)
    if problem is None:
        return BubblewrapSandbox(limits, bwrap)
    if choice == "bwrap":
        raise RuntimeError(f"{ENV_VAR}=bwrap but {problem}")
    return Sandbox(limits, reason=problem)


def sandbox_uid(workdir: Path) -> int:
    """The uid student code for ``workdir`` runs as (when the grader is root): the same for its kernel and probe,
    and different for two submissions graded at once (but for a 1 in 100,000 hash collision)."""
    return UID_BASE + zlib.crc32(str(workdir.resolve()).encode()) % UID_SPAN


def remove_tree(folder: Path) -> None:
    """Remove a folder student code could write in, however deep it nested it, never following a link: coreutils'
    rm does both, where shutil.rmtree on Python 3.11 recurses and, even with ignore_errors, fails with a
    RecursionError past about 1,000 levels (a notebook makes those with os.mkdir and os.chdir in a loop)."""
    subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def host_data_home() -> Path:
    """scikit-learn's data home on the grading machine, found the way scikit-learn finds it."""
    return Path(os.environ.get("SCIKIT_LEARN_DATA", "~/scikit_learn_data")).expanduser()


@functools.cache
def _bwrap_self_test(bwrap: str) -> str | None:
    """Run a trivial program in a real sandbox once per process; return why it failed, or None."""
    with tempfile.TemporaryDirectory(prefix="grader-sandbox-selftest-") as scratch:
        workdir = Path(scratch) / "work"
        sandbox = BubblewrapSandbox(Limits(wall_seconds=30), bwrap)
        sandbox.prepare(workdir)
        probe = [sys.executable, "-I", "-c", "import os; print(os.getuid())"]
        try:
            done = subprocess.run(
                sandbox.command(probe, workdir),
                cwd=workdir,
                env=sandbox.environment(workdir),
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"the bubblewrap self-test could not run ({error})"
        if done.returncode != 0:
            return f"the bubblewrap self-test failed: {done.stderr.strip()[-300:] or f'exit {done.returncode}'}"
        if os.geteuid() == 0 and done.stdout.strip() != str(sandbox_uid(workdir)):
            return f"the bubblewrap self-test ran as uid {done.stdout.strip()!r}, not the sandbox uid"
    return None


def _system_binds() -> list[str]:
    """Read-only /usr and the few /etc entries programs need; the merged-/usr symlinks as the host has them."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return args


def _open_parent_directories(args: list[str]) -> list[str]:
    """bwrap, run as root, creates the parents of a mount point with mode 0700 (seen with bwrap 0.8); the
    sandbox uid must be able to walk through them to what is mounted below."""
    mount_options = ("--ro-bind", "--bind", "--tmpfs", "--dev", "--proc", "--symlink")
    destinations = {
        Path(args[i + (1 if args[i] in ("--tmpfs", "--dev", "--proc") else 2)])
        for i, arg in enumerate(args)
        if arg in mount_options
    }
    parents = {parent for path in destinations for parent in path.parents if parent != Path("/")}
    chmods = []
    for parent in sorted(parents - destinations, key=lambda path: len(path.parts)):
        chmods += ["--chmod", "0755", str(parent)]
    return chmods


def _python_roots() -> list[Path]:
    """The venv and the installation it was made from (which may live in an unreadable home, e.g. pyenv's)."""
    roots = []
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        path = Path(prefix).resolve()
        if path not in roots and not path.is_relative_to("/usr"):
            roots.append(path)
    return roots


def _chown_tree(root: Path, uid: int) -> None:
    """Give the sandbox uid what the grader put in a folder of its own; never follows a link. A loop, not
    os.walk, which recurses on Python 3.11: a folder can be nested deeper than the recursion limit."""
    os.lchown(root, uid, uid)
    folders = [str(root)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    os.lchown(entry.path, uid, uid)
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)


def _environ_has_marker(pid: int, workdir: Path) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_VAR}={workdir}".encode() in environ.split(b"\0")


def _uid_of(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None


def _kill_matching(matches, seconds: float = KILL_WAIT_SECONDS) -> None:
    """SIGKILL every live process that ``matches`` and return once none is left (or after ``seconds``): a killed
    process runs on until the kernel delivers the signal, and a fork bomb spawns children between scan and kill."""
    deadline = time.monotonic() + seconds
    while victims := [pid for pid in _live_pids() if matches(pid)]:
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _live_pids() -> list[int]:
    """Every process but this one and zombies (a zombie has stopped running; it waits for its parent to reap it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


# ---------------------------------------------------------------------------------------------------------------
# Inside the sandbox: python -I -S sandbox.py CONFIG ARGV...


def _enter(config: dict, argv: list[str]) -> int:
    import resource

    uid = config["uid"]
    if uid is not None:
        # Files the grader wrote after prepare() (the kernel's connection file) must be readable by the student.
        for folder in config["writable"]:
            _chown_tree(Path(folder), uid)
    for name, value in config["rlimits"].items():
        kind = getattr(resource, name)
        hard = resource.getrlimit(kind)[1]
        limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (limit, limit))
    if uid is not None:
        _drop_privileges(uid)
    # Before the fork, so that no SIGINT can arrive in between; the child's program gets the default back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        except OSError as error:
            sys.stderr.write(f"grader sandbox: cannot run {argv[0]}: {error}\n")
        os._exit(127)
    return _supervise(child, config["wall_seconds"], config["own_namespace"])


def _drop_privileges(uid: int) -> None:
    import ctypes

    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to non-root: the kernel clears the permitted and effective sets
    libc = ctypes.CDLL(None, use_errno=True)
    # The inheritable set survives setresuid; empty it too (header: _LINUX_CAPABILITY_VERSION_3, this process).
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    no_capabilities = (ctypes.c_uint32 * 6)()
    set_no_new_privs = 38  # PR_SET_NO_NEW_PRIVS: no setuid binary can hand privileges back
    if libc.capset(header, no_capabilities) != 0 or libc.prctl(set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "could not drop capabilities")


def _supervise(child: int, wall_seconds: int, own_namespace: bool) -> int:
    """Wait for the student's program; past the wall clock, kill it and everything it started."""

    def out_of_time(signum, frame):
        sys.stderr.write(f"grader sandbox: wall-clock limit of {wall_seconds} s reached, killing student code\n")
        _kill_everything(own_namespace)

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(wall_seconds)
    _, status = os.waitpid(child, 0)
    signal.alarm(0)
    if own_namespace:
        _kill_everything(own_namespace)  # background processes the program left behind; the pipeline does it otherwise
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _kill_everything(own_namespace: bool) -> None:
    # In our own pid namespace, -1 is exactly the student's processes. Outside one, only our process group is
    # ours to kill, and that includes this supervisor.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if own_namespace:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(os.getpgrp(), signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(_enter(json.loads(sys.argv[1]), sys.argv[2:]))
