"""The sandbox, driven directly: small programs launched through ``sandbox.command`` the way the pipeline does.

Tests that need bubblewrap skip with the reason when this machine cannot run it; the fallback tests always run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from grader import sandbox as sandbox_module
from grader.sandbox import REPO, Limits, create, sandbox_uid

SMALL = Limits(wall_seconds=60, memory_mb=512, max_processes=32)


def run(sandbox, workdir: Path, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    sandbox.prepare(workdir)
    return subprocess.run(
        sandbox.command([sys.executable, "-c", textwrap.dedent(code)], workdir),
        cwd=workdir,
        env=sandbox.environment(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def wait_until_gone(marker: str, seconds: float = 5) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture(scope="module")
def isolated():
    sandbox = create(SMALL)
    if sandbox.isolated:
        return sandbox
    if os.geteuid() == 0 and shutil.which("bwrap"):  # set-up installed it: a sandbox that fails here is a bug
        pytest.fail(f"bubblewrap is installed but the sandbox does not work: {sandbox.description}")
    pytest.skip(f"bubblewrap sandbox unavailable here: {sandbox.description}")


# --- with bubblewrap ------------------------------------------------------------------------------------------


def test_runs_unprivileged_without_capabilities(isolated, tmp_path):
    code = "import os; print(os.getuid(), os.getgid()); print(open('/proc/self/status').read())"
    done = run(isolated, tmp_path, code)
    assert done.returncode == 0, done.stderr
    uid, gid = map(int, done.stdout.split()[:2])
    assert uid != 0 and gid != 0
    if os.geteuid() == 0:
        assert uid == sandbox_uid(tmp_path)
    status = dict(line.split(":\t", 1) for line in done.stdout.splitlines()[1:] if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapInh"], 16) == 0


def test_no_network_not_even_loopback(isolated, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    connections = []

    def accept():
        with contextlib.suppress(OSError):
            connections.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    done = run(
        isolated,
        tmp_path,
        f"""
        import socket
        for host in ("127.0.0.1", "10.0.0.1"):
            try:
                socket.create_connection((host, {port}), timeout=3)
                print("connected", host)
            except OSError as error:
                print("refused", host, error)
        """,
    )
    listener.close()
    assert done.returncode == 0, done.stderr
    assert "connected" not in done.stdout
    assert not connections, "the listener on the grading machine saw a connection from the sandbox"


def test_sees_only_its_workdir_and_the_kit(isolated, tmp_path):
    other = tmp_path / "submission-a"
    other.mkdir()
    (other / "secret.txt").write_text("someone else's work")
    workdir = tmp_path / "submission-b"
    done = run(
        isolated,
        workdir,
        f"""
        import os, sys
        for path in ({str(other / "secret.txt")!r}, "../submission-a/secret.txt", {str(REPO / "homework")!r},
                     {str(Path.home())!r} + "/scikit_learn_data"):
            print(path, os.path.exists(path))
        print("kit", os.path.isdir({str(REPO / "grader")!r}), os.path.isdir(sys.prefix))
        print("data", sorted(os.listdir(os.environ["SCIKIT_LEARN_DATA"])))
        """,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(line.endswith("False") for line in lines[:4]), done.stdout
    assert lines[4] == "kit True True"
    if sandbox_module.host_data_home().is_dir():
        assert "cal_housing_py3.pkz" in lines[5] or lines[5] == "data []"


def test_writes_only_its_workdir(isolated, tmp_path):
    workdir = tmp_path / "work"
    refused = [str(REPO / "grader" / "escaped.txt"), str(Path(sys.prefix) / "escaped.txt"), "/etc/escaped", "/escaped"]
    # The sandbox sees tmp_path only as the mount point of its workdir, inside its private /tmp: a write there
    # may succeed without reaching the grading machine, so only the machine is checked for that one.
    sibling = tmp_path / "escaped.txt"
    done = run(
        isolated,
        workdir,
        f"""
        for path in {[*refused, str(sibling)]!r}:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as error:
                print("blocked", path, error.strerror)
        open("inside.txt", "w").write("mine")
        open("/tmp/scratch", "w").write("private")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert all(f"blocked {path} " in done.stdout for path in refused), done.stdout
    assert (workdir / "inside.txt").read_text() == "mine"
    assert not [path for path in [*refused, str(sibling), "/tmp/scratch"] if Path(path).exists()]


def test_memory_cap_stops_an_allocation(isolated, tmp_path):
    done = run(
        isolated,
        tmp_path,
        """
        import mmap
        try:
            block = bytearray(3 * 2**30)
            print("allocated private")
        except MemoryError:
            print("private refused")
        try:
            shared = mmap.mmap(-1, 6 * 2**30)  # shared anonymous memory: RLIMIT_AS, not RLIMIT_DATA, stops it
            print("allocated shared")
        except OSError:
            print("shared refused")
        """,
    )
    assert done.stdout.split() == ["private", "refused", "shared", "refused"], done.stdout + done.stderr


def test_process_cap_stops_a_fork_bomb(isolated, tmp_path):
    marker = f"forkbomb-{uuid.uuid4().hex}"
    done = run(
        isolated,
        tmp_path,
        f"""
        import os, sys, time
        children = 0
        try:
            while children < 500:
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
                children += 1
        except OSError as error:
            print("stopped after", children, error.strerror, flush=True)
        """,
    )
    assert done.stdout.startswith("stopped after"), done.stdout + done.stderr
    assert int(done.stdout.split()[2]) < SMALL.max_processes
    assert not wait_until_gone(marker), "fork bomb children outlived the sandbox"


def test_killing_the_process_group_ends_everything(isolated, tmp_path):
    marker = f"daemon-{uuid.uuid4().hex}"
    isolated.prepare(tmp_path)
    code = f"""
    import os, sys, time
    if os.fork() == 0:
        os.setsid()  # a daemon escapes the process group the grader kills
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", "{marker}"])
    print("started", flush=True)
    time.sleep(120)
    """
    process = subprocess.Popen(
        isolated.command([sys.executable, "-c", textwrap.dedent(code)], tmp_path),
        cwd=tmp_path,
        env=isolated.environment(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline().strip() == "started"
    assert processes_with(marker)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not wait_until_gone(marker), "a daemon survived the kill of the sandbox's process group"


def test_wall_clock_backstop(isolated, tmp_path):
    started = time.monotonic()
    done = run(create(Limits(wall_seconds=1)), tmp_path, "import time; time.sleep(120)", timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert "wall-clock limit" in done.stderr


def test_kernel_over_ipc_inside_the_sandbox(isolated, tmp_path):
    from jupyter_client import KernelManager

    class SandboxedKernel(KernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            return isolated.command([sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file], tmp_path)

    isolated.prepare(tmp_path)
    manager = SandboxedKernel(transport="ipc", ip=str(tmp_path / "kernel"), connection_file=str(tmp_path / "k.json"))
    manager.start_kernel(cwd=str(tmp_path), env=isolated.environment(tmp_path), start_new_session=True)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        outputs = []
        reply = client.execute_interactive("import os; 1+1, os.getuid()", timeout=30, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok"
        result = next(m for m in outputs if m["msg_type"] == "execute_result")["content"]["data"]["text/plain"]
        assert result.startswith("(2, ") and not result.endswith(" 0)")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        isolated.cleanup(tmp_path)


@pytest.mark.parametrize("choice", ["auto", "off"])
def test_an_interrupt_reaches_the_program_not_its_supervisor(monkeypatch, tmp_path, choice):
    # A SIGINT to the process group (jupyter_client's signal interrupts) made the entry print a KeyboardInterrupt
    # traceback from os.waitpid and leave its program unsupervised.
    monkeypatch.setenv("GRADER_SANDBOX", choice)
    box = create(SMALL)
    box.prepare(tmp_path)
    program = textwrap.dedent(
        """
        import time
        try:
            print("started", flush=True)
            time.sleep(30)
        except KeyboardInterrupt:
            print("ok")
        """
    )
    process = subprocess.Popen(
        box.command([sys.executable, "-c", program], tmp_path),
        cwd=tmp_path,
        env=box.environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline().strip() == "started"
    entry = next(pid for pid in _descendants(process.pid) if _argv(pid)[:3] == [sys.executable, "-I", "-S"])
    os.killpg(os.getpgid(entry), signal.SIGINT)  # the entry's group: the entry and the program it runs
    out, err = process.communicate(timeout=30)
    assert out.strip() == "ok", (out, err, process.returncode)
    assert "Traceback" not in err and process.returncode == 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (bwrap's init and the entry run under the launched bwrap)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        found.append(parent)
        for task in Path(f"/proc/{parent}/task").iterdir():
            pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def test_remove_tree_removes_any_depth_and_follows_no_link(tmp_path):
    # A notebook nests folders past the recursion limit with os.mkdir and os.chdir; shutil.rmtree then raises.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("not the student's")
    root = tmp_path / "student"
    root.mkdir()
    (root / "link").symlink_to(outside)
    here = os.getcwd()
    try:
        os.chdir(root)
        for _ in range(1500):
            os.mkdir("a")
            os.chdir("a")
    finally:
        os.chdir(here)
    sandbox_module.remove_tree(root)
    assert not root.exists()
    assert (outside / "kept.txt").read_text() == "not the student's"


# --- without bubblewrap: the fallback is loud and still limits ------------------------------------------------


def test_off_is_loud_and_still_limits_memory(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADER_SANDBOX", "off")
    sandbox = create(SMALL)
    assert sandbox.isolated is False
    assert sandbox.description.startswith("OFF:") and "GRADER_SANDBOX=off" in sandbox.description
    done = run(sandbox, tmp_path, "bytearray(3 * 2**30)")
    assert done.returncode != 0 and "MemoryError" in done.stderr


def test_missing_bwrap_falls_back_loudly(monkeypatch, tmp_path):
    monkeypatch.delenv("GRADER_SANDBOX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap anywhere
    sandbox = create(SMALL)
    assert not sandbox.isolated
    assert sandbox.description.startswith("OFF: bubblewrap (bwrap) is not installed")
    monkeypatch.setenv("GRADER_SANDBOX", "bwrap")
    with pytest.raises(RuntimeError, match="not installed"):
        create(SMALL)


def test_failing_self_test_falls_back_loudly(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.delenv("GRADER_SANDBOX", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    sandbox = create(SMALL)
    assert not sandbox.isolated
    assert sandbox.description.startswith("OFF: the bubblewrap self-test failed: bwrap: setting up uid map")


def test_unknown_choice_is_an_error(monkeypatch):
    monkeypatch.setenv("GRADER_SANDBOX", "maybe")
    with pytest.raises(ValueError, match="off, auto or bwrap"):
        create(SMALL)


def test_environment_carries_nothing_of_the_grader(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    for choice in ("off", "auto"):
        monkeypatch.setenv("GRADER_SANDBOX", choice)
        environment = create(SMALL).environment(tmp_path)
        assert "AWS_SECRET_ACCESS_KEY" not in environment
        assert environment["HOME"] == str(tmp_path)


def test_off_cleanup_kills_escaped_daemons(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADER_SANDBOX", "off")
    sandbox = create(SMALL)
    marker = f"escaped-{uuid.uuid4().hex}"
    done = run(
        sandbox,
        tmp_path,
        f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", "{marker}"])
        """,
    )
    assert done.returncode == 0, done.stderr
    assert processes_with(marker), "the daemon should have escaped the process group"
    sandbox.cleanup(tmp_path)
    assert not processes_with(marker), "cleanup returns once what it killed is gone"


def test_cleanup_does_not_wait_for_zombies(tmp_path):
    # A zombie has stopped running and matches by uid as long as its parent has not reaped it.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z":
        time.sleep(0.01)
    started = time.monotonic()
    sandbox_module._kill_matching(lambda pid: pid == zombie.pid)
    assert time.monotonic() - started < 1
    zombie.wait()


def test_private_tmp_is_mounted_before_the_kit_so_a_kit_under_tmp_stays_visible(monkeypatch, tmp_path):
    # CI may clone the kit anywhere, /tmp included: a tmpfs mounted after the venv's bind would hide the venv.
    box = sandbox_module.BubblewrapSandbox(SMALL, "/usr/bin/bwrap")
    monkeypatch.setattr(sandbox_module, "_python_roots", lambda: [Path("/tmp/ci/main/.venv")])
    args = box._bwrap_argv(tmp_path / "work")
    private_tmp = next(i for i, arg in enumerate(args) if arg == "--tmpfs" and args[i + 1] == "/tmp")
    venv_bind = next(i for i, arg in enumerate(args) if arg == "--ro-bind" and args[i + 1] == "/tmp/ci/main/.venv")
    workdir_bind = args.index(str(tmp_path / "work"))
    assert private_tmp < venv_bind and private_tmp < workdir_bind
