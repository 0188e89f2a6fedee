"""What a hostile kernel sends stays bounded, and however a run ends the grader ends it promptly and cleanly.

Each attack is a notebook built here, run the way the pipeline runs one (``execute.run_notebook`` in the sandbox);
the tests assert the status, what the executed notebook kept, the grader's own memory and the runner's, and that
no process of the attack is left. The kernel's sandbox is bubblewrap where this machine has it, plus the plain
fallback for the tests that are about the sandbox's own process.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

from grader import execute, grade_submission, sandbox
from grader.sandbox import Limits
from tests.test_sandbox import processes_with

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUBRIC = REPO / "homework" / "homework-195.rubric.toml"
LIMITS = Limits(wall_seconds=120, cell_seconds=60, memory_mb=2048, output_bytes=20_000)
GRADER_RSS_LIMIT = 1024 * 2**20
SAVED_LIMIT = 2 * 2**20
NEXT_CELL = "print('the next cell ran')"
CELL_BUDGET = max(execute.OUTPUT_KEPT_FACTOR * LIMITS.output_bytes, execute.CELL_BUDGET_FLOOR)


class RunnerMemory:
    """The largest resident size any runner (a child of this process running execute.py) reached."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            for child in me.children():
                try:
                    if execute.__file__ in child.cmdline():
                        self.peak = max(self.peak, child.memory_info().rss)
                except psutil.Error:
                    continue  # gone while we looked

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(tmp_path: Path, *sources: str, limits: Limits = LIMITS, mode: str | None = None):
    """Run a notebook of ``sources`` as the pipeline does; return the Execution and the runner's peak memory."""
    if mode is not None:
        os.environ[sandbox.ENV_VAR] = mode
    try:
        box = sandbox.create(limits)
    finally:
        os.environ.pop(sandbox.ENV_VAR, None)
    workdir = tmp_path / "work"
    box.prepare(workdir)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    with RunnerMemory() as memory:
        try:
            execution = execute.run_notebook(notebook, workdir, box, limits, box.environment(workdir), [])
        finally:
            box.cleanup(workdir)
    return execution, memory.peak


def grader_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def saved_bytes(execution) -> int:
    return len(nbformat.writes(execution.notebook).encode())


def printed(execution, cell: int) -> str:
    return "".join(output.get("text", "") for output in execution.notebook.cells[cell].outputs)


# The reviews' attacks: what each sends, what must be left of it.
ATTACKS = {
    "metadata-100mb": (
        "from IPython.display import display\n"
        "for _ in range(6):\n"
        "    display({'text/plain': 'x'}, raw=True, metadata={'m': 'x' * 100_000_000})\n"
        "print('after')",
        "made again",
    ),
    "metadata-7mb": (
        "from IPython.display import display\n"
        "for _ in range(6):\n"
        "    display({'text/plain': 'x'}, raw=True, metadata={'m': 'x' * 7_000_000})\n"
        "print('after')",
        "past the 1,048,576 bytes a cell may send",
    ),
    "widget-updates": (
        "from comm import create_comm\n"
        "comm = create_comm(target_name='jupyter.widget', data={'state': {'_model_name': 'M', '_model_module': 'm'}})\n"
        "for _ in range(40):\n"
        "    comm.send({'method': 'update', 'state': {'value': 'x' * 8_000_000}})\n"
        "print('after')",
        "past the 1,048,576 bytes a cell may send",
    ),
    "empty-streams": (
        "kernel = get_ipython().kernel\n"
        "parent = kernel.get_parent('shell')\n"
        "for _ in range(100_000):\n"
        "    kernel.session.send(kernel.iopub_socket, 'stream', {'name': 'stdout', 'text': ''}, parent=parent)\n"
        "print('after')",
        "past the 1,048,576 bytes a cell may send",
    ),
    "print-1gb": ("for _ in range(1000):\n    print('x' * 1_000_000)", "made again"),
    "endless-frames": (
        "import time\n"
        "frame = b'x' * 8_000_000\n"
        "get_ipython().kernel.iopub_socket.send_multipart([frame] * 200, copy=False)  # 1.6 GB in one message\n"
        "time.sleep(3)\n"
        "print('after')",
        "made again",
    ),
    "garbage-messages": (
        "import time\n"
        "kernel = get_ipython().kernel\n"
        "kernel.iopub_socket.send_multipart([b'not', b'a', b'message'])\n"
        "kernel.session.send(kernel.iopub_socket, 'stream', {'text': 'no name'}, parent=kernel.get_parent('shell'))\n"
        "time.sleep(1)\n"
        "print('after')",
        "not valid Jupyter messages",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_what_the_kernel_sends_is_bounded_and_said(tmp_path, attack):
    source, notice = ATTACKS[attack]
    execution, runner_peak = run(tmp_path, source, NEXT_CELL)
    assert execution.status == "graded", execution.message
    assert notice in printed(execution, 0)
    assert printed(execution, 1) == "the next cell ran\n", "the notebook must go on after the attack"
    assert saved_bytes(execution) < SAVED_LIMIT
    assert len(execution.notebook.cells[0].outputs) <= CELL_BUDGET // execute.MESSAGE_COST + 1  # and the notice
    assert grader_rss() < GRADER_RSS_LIMIT
    assert runner_peak < execute.RUNNER_MEMORY_BYTES


def test_a_message_the_kernel_cannot_serialize_is_a_memory_error_of_its_cell(tmp_path):
    # 500 MB fit the 1 GB cap once; dumping them takes three copies with json (a MemoryError), and orjson reserved
    # ten times as much, then crashed the kernel instead of raising (every time here; the 100 MB attacks above did
    # only when the kernel held much else meanwhile).
    too_large = (
        "from IPython.display import display\ndisplay({'text/plain': 'x'}, raw=True, metadata={'m': 'x' * 500_000_000})"
    )
    execution, _ = run(tmp_path, too_large, NEXT_CELL, limits=Limits(wall_seconds=120, cell_seconds=60, memory_mb=1024))
    assert execution.status == "error", execution.message
    assert execution.message.startswith("cell 0 raised MemoryError")
    assert printed(execution, 1) == "the next cell ran\n"


def test_widget_state_is_kept_within_the_budget(tmp_path):
    source, _ = ATTACKS["widget-updates"]
    execution, _ = run(tmp_path, source)
    widgets = json.dumps(execution.notebook.metadata.get("widgets", {}))
    assert len(widgets) < execute.CELL_BUDGET_FLOOR


def test_a_huge_exception_is_an_error_of_its_cell_not_a_timeout(tmp_path):
    started = time.monotonic()
    execution, _ = run(tmp_path, "raise ValueError('x' * 100_000_000)", NEXT_CELL)
    assert execution.status == "error", execution.message
    assert "cell 0: the kernel sent a reply larger than the 8 MB" in execution.message
    assert time.monotonic() - started < LIMITS.cell_seconds
    assert grader_rss() < GRADER_RSS_LIMIT


def test_an_exception_whose_output_was_dropped_is_still_the_cells_error(tmp_path):
    execution, _ = run(tmp_path, "raise ValueError('x' * 2_000_000)", NEXT_CELL)
    assert execution.status == "error"
    assert execution.message.startswith("cell 0 raised ValueError: xxx")
    assert len(execution.message) <= 500
    assert "past the 1,048,576 bytes" in printed(execution, 0)
    assert saved_bytes(execution) < SAVED_LIMIT


def test_the_notebooks_budget_bounds_many_cells(tmp_path):
    cell = "print('y' * 900_000)"
    execution, _ = run(tmp_path, *[cell] * 40)
    kept = sum(len(output.get("text", "")) for c in execution.notebook.cells for output in c.outputs)
    assert kept <= execute.NOTEBOOK_BUDGET
    assert "past the" in printed(execution, 39)


def test_a_runner_that_dies_becomes_the_status_and_leaves_nothing(tmp_path):
    marker = f"orphan-{uuid.uuid4().hex}"
    kill_the_runner = (
        "import os, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', '{marker}'])\n"
        "runner = int(open(f'/proc/{os.getppid()}/stat').read().split(') ')[1].split()[1])\n"
        "os.kill(runner, 9)"
    )
    execution, _ = run(tmp_path, "print('first')", kill_the_runner, NEXT_CELL, mode="off")
    assert execution.status == "error"
    assert "runner of this notebook was killed by SIGKILL in cell 1" in execution.message
    assert not processes_with(marker)


GRADE_ONE = """
import sys
from pathlib import Path
import nbformat
from grader import execute, sandbox
from grader.sandbox import Limits
limits = Limits(wall_seconds=300, cell_seconds=300)
box, workdir = sandbox.create(limits), Path(sys.argv[1])
box.prepare(workdir)
cell = "import pathlib, time; pathlib.Path('running').touch(); time.sleep(300)"
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
execute.run_notebook(notebook, workdir, box, limits, box.environment(workdir), [])
"""


def test_a_grader_killed_mid_notebook_leaves_neither_runner_nor_kernel(tmp_path):
    # SIGKILL, the out-of-memory killer or a lost Dask worker: the grader cannot stop what it started.
    grader = subprocess.Popen([sys.executable, "-c", GRADE_ONE, str(tmp_path / "work")], cwd=REPO)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "work" / "running").exists():  # the runner has said the cell started: it only waits
            assert time.monotonic() < deadline and grader.poll() is None, "the cell never started"
            time.sleep(0.2)
        kernels = [pid for pid in psutil.pids() if _is_kernel_of(pid, tmp_path)]
        runners = [child for child in psutil.Process(grader.pid).children() if execute.__file__ in child.cmdline()]
    finally:
        grader.kill()
        grader.wait()
    assert runners and kernels
    alive = psutil.wait_procs(runners, timeout=5)[1]
    for runner in alive:
        runner.kill()  # not to leave it behind when the test fails
    assert not alive, "the runner lives on"
    deadline = time.monotonic() + 5
    while (left := [pid for pid in psutil.pids() if _is_kernel_of(pid, tmp_path)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "the kernel's sandbox lives on"


def test_a_kernel_blocked_in_c_with_signals_blocked_times_out_promptly(tmp_path):
    marker = f"blocked-{uuid.uuid4().hex}"
    blocked = (
        f"# {marker}\n"
        "import ctypes, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})\n"
        "ctypes.CDLL(None).sleep(1000)"
    )
    limits = Limits(wall_seconds=120, cell_seconds=5)
    started = time.monotonic()
    execution, _ = run(tmp_path, blocked, limits=limits)
    assert execution.status == "timeout"
    assert "cell 0 ran longer than the 5 s" in execution.message
    assert time.monotonic() - started < 20
    assert not [pid for pid in psutil.pids() if _is_kernel_of(pid, tmp_path)]


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_a_kernel_that_ignores_shutdown_is_still_stopped_promptly(tmp_path, mode):
    stubborn = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "kernel = get_ipython().kernel\n"
        "kernel.control_handlers['shutdown_request'] = lambda *args, **kwargs: None\n"
        "kernel.shell_handlers['shutdown_request'] = lambda *args, **kwargs: None\n"
        "print('stubborn')"
    )
    started = time.monotonic()
    execution, _ = run(tmp_path, stubborn, mode=mode)
    assert execution.status == "graded", execution.message
    assert time.monotonic() - started < 30
    assert not [pid for pid in psutil.pids() if _is_kernel_of(pid, tmp_path)]


def _is_kernel_of(pid: int, tmp_path: Path) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{sandbox.MARKER_VAR}={tmp_path / 'work'}".encode() in environ.split(b"\0")


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_no_traceback_when_the_sandbox_entry_gets_the_interrupt(tmp_path, mode, capfd):
    # The entry supervises the kernel; a SIGINT reaching it (as jupyter_client's signal interrupts would, to
    # the whole process group) printed a KeyboardInterrupt traceback in the middle of the progress bar.
    interrupt_the_entry = "import os, signal, time\nos.kill(os.getppid(), signal.SIGINT)\ntime.sleep(1)"
    execution, _ = run(tmp_path, interrupt_the_entry, NEXT_CELL, mode=mode)
    assert execution.status == "graded", execution.message
    assert printed(execution, 1) == "the next cell ran\n", "the kernel must survive its supervisor's interrupt"
    assert "Traceback" not in execution.kernel_log
    assert "Traceback" not in capfd.readouterr().err


def test_the_kernel_cannot_change_its_socket_folder_once_connected(tmp_path):
    if os.geteuid() != 0 or not sandbox.create(LIMITS).isolated:
        pytest.skip("the folder is taken back from a sandbox uid of its own only when the grader runs as root")
    plant = (
        "import os\n"
        "import sys\n"
        "folder = os.path.dirname(sys.argv[sys.argv.index('-f') + 1])\n"
        "try:\n"
        "    os.symlink('/etc/passwd', os.path.join(folder, 'kernel-99'))\n"
        "    print('planted')\n"
        "except OSError as error:\n"
        "    print('refused', error.strerror)"
    )
    before = set(Path(execute.RUNTIME_PARENT).glob("grader-kernel-*"))
    execution, _ = run(tmp_path, plant)
    assert printed(execution, 0).startswith("refused"), printed(execution, 0)
    assert set(Path(execute.RUNTIME_PARENT).glob("grader-kernel-*")) <= before, "the socket folder must be removed"


def test_long_student_names_under_a_deep_out_are_graded(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    path = tmp_path / "submission.ipynb"
    nbformat.write(notebook, path)
    out = tmp_path.joinpath(*["deep-folder-of-the-course"] * 8)
    for student in ("s" * 200, "é" * 125):  # 200 characters; 250 bytes, near the 255 a file name may have
        result = grade_submission(path, RUBRIC, out, student=student)
        assert result.status == "graded", result.message
        folder = out / student
        assert json.loads((folder / "result.json").read_text())["student"] == student
        executed = [entry for entry in folder.iterdir() if entry.suffix == ".ipynb"]
        assert len(executed) == 1 and "42" in executed[0].read_text()


def test_values_json_cannot_write_do_not_stop_the_kernel(tmp_path):
    # The kernel serializes with the standard json (execute.PACKER), which refuses NaN and infinities as they are:
    # jupyter_client's fallback must clean them, or the kernel would lose the message, or die.
    nan_metadata = (
        "from IPython.display import display\n"
        "display({'text/plain': 'x'}, raw=True, metadata={'a': float('nan'), 'b': float('inf')})"
    )
    execution, _ = run(tmp_path, nan_metadata, NEXT_CELL)
    assert execution.status == "graded", execution.message
    assert printed(execution, 1) == "the next cell ran\n"


@pytest.mark.parametrize(
    ("death", "said"),
    [
        ("import os; os._exit(3)", "it ended with exit code 3"),
        ("import ctypes; ctypes.string_at(0)", "it was killed by SIGSEGV (a crash in native code)"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "it was killed by SIGKILL (the system ran out"),
    ],
)
@pytest.mark.parametrize("mode", ["off", "auto"])
def test_a_dead_kernel_says_how_it_ended(tmp_path, death, said, mode):
    # The cause tells a student's os._exit from a crash and from the machine's out-of-memory killer.
    execution, _ = run(tmp_path, "print('first')", death, NEXT_CELL, mode=mode)
    assert execution.status == "kernel_died"
    assert execution.message.startswith(f"the kernel died in cell 1: {said}"), execution.message
