"""Execute a student's notebook in its working directory, through the sandbox, with time and memory limits.

The kernel is student code, and so is every byte it sends on any of its ZeroMQ channels. So nbclient does not
run in the grader's process but in a runner, ``python -I grader/execute.py``, started per notebook with a memory
cap of its own. The runner keeps only what the budgets allow of what the kernel sends (``CappedNotebookClient``)
and sends the executed notebook back as one line on its stdout, which the grader reads with a size limit. What
slips past the budgets can at worst kill the runner, and that becomes this submission's status: the grader's own
memory never depends on what the kernel sends. The runner imports nothing of the grader's (``-I``, run as a
script), and one is always started ahead, so that its imports (0.45 s) overlap the notebook before.

The kernel talks to the runner over jupyter_client's ``ipc`` transport: unix sockets in a short private folder
under /tmp (a socket's path must fit in 108 bytes, so it cannot depend on the student's name or ``--out``),
which the sandbox shows the kernel at the same path, so that a sandbox without network still lets it be driven.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellControlSignal, CellTimeoutError, DeadKernelError
from traitlets import Integer, Type, default

if TYPE_CHECKING:  # the runner, run as a script, imports nothing of the grader's
    from grader.sandbox import Limits, Sandbox

RUNTIME_PARENT = "/tmp"
CONNECTION_FILE = "kernel.json"
# What the runner keeps of what the kernel sends: per cell, a multiple of what the saved notebook keeps of one
# output (and at least CELL_BUDGET_FLOOR); per notebook, NOTEBOOK_BUDGET. A message costs its bytes on the wire
# plus MESSAGE_COST, what even an empty output costs in memory, so a flood of empty messages is bounded too.
OUTPUT_KEPT_FACTOR = 10
CELL_BUDGET_FLOOR = 2**20
NOTEBOOK_BUDGET = 32 * 2**20
MESSAGE_COST = 1024
# ZeroMQ refuses a frame larger than FRAME_BYTES before allocating it (nothing that large could be kept), and
# stops reading a socket that holds QUEUED_MESSAGES messages the runner has not taken yet.
FRAME_BYTES = 8 * 2**20
QUEUED_MESSAGES = 16
# The runner's memory cap (RLIMIT_DATA): what the budgets let it hold is far less; the cap is for what they
# cannot see, such as a multipart message of endless frames, which ZeroMQ assembles whole before delivering it.
RUNNER_MEMORY_BYTES = 1024 * 2**20
RUNNER_OUT_OF_MEMORY = 3  # the runner's exit code when the cap stopped it
RUNNER_ORPHANED = 4  # its exit code when the grader that started it was gone
PARENT_POLL_SECONDS = 0.5
# How long a kernel whose reply was refused may take to turn out dead instead (it takes its sandbox along).
DEATH_SECONDS = 1
# Beyond the notebook's time, how long the runner may take before the grader kills it: its kernel's start (which
# nbclient waits for up to 60 s, before the notebook's clock starts), stopping the kernel and answering.
RUNNER_GRACE_SECONDS = 90
# How the kernel and the runner serialize messages: the standard library's json, never orjson (jupyter_client's
# default when it is installed). Both run under a memory cap, and orjson, when an allocation fails, writes through
# a null pointer instead of raising MemoryError: the process dies of SIGSEGV. It reserves about ten times a
# string's length to dump it, so a 100 MB output killed the kernel on the runs where it held much else meanwhile.
PACKER = "json"
KERNEL_LOG_BYTES = 16 * 1024
KERNEL_EXIT_SECONDS = 2  # how long a kernel found dead may take to be reaped, for its exit status
# What a signal that ends a kernel usually means.
SIGNAL_CAUSES = {
    "SIGKILL": "the system ran out of memory, or a process killed it",
    "SIGSEGV": "a crash in native code",
    "SIGBUS": "a crash in native code",
    "SIGABRT": "an abort in native code",
}
LANGUAGE_INFO_BYTES = 4096
WIRE_BYTES = "grader_wire_bytes"  # added to each message: its size as received
SOCKET_WAIT_SECONDS = 60


class KernelSentTooMuch(Exception):
    """A cell's reply was refused: ZeroMQ dropped the connection it came on, over a frame past FRAME_BYTES."""


@dataclass
class Execution:
    status: str  # graded, error, timeout or kernel_died
    message: str
    notebook: nbformat.NotebookNode
    # The last KERNEL_LOG_BYTES the kernel process and its sandbox printed outside any cell (their own stdout and
    # stderr), which never reach the grader's terminal.
    kernel_log: str = ""


def run_notebook(
    notebook: nbformat.NotebookNode,
    workdir: Path,
    sandbox: Sandbox,
    limits: Limits,
    env: dict[str, str],
    launch_prefix: list[str],
) -> Execution:
    """Run every cell (errors do not stop it) in a runner process and say how the run ended."""
    from grader.sandbox import remove_tree  # here, in the grader: the runner, a script, imports none of its modules

    runtime = Path(tempfile.mkdtemp(prefix="grader-kernel-", dir=RUNTIME_PARENT))
    try:
        connection = str(runtime / CONNECTION_FILE)
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", connection, f"--Session.packer={PACKER}"]
        job = {
            "notebook": notebook,
            "workdir": str(workdir),
            "runtime": str(runtime),
            "command": launch_prefix + sandbox.command(kernel, workdir, writable=(runtime,)),
            "env": env,
            "limits": {name: getattr(limits, name) for name in ("wall_seconds", "cell_seconds", "output_bytes")},
        }
        return _run_in_runner(job, notebook, limits.wall_seconds)
    except Exception as error:  # the runner could not start, or answered what no runner sends
        return Execution("error", f"the grader could not run the notebook: {type(error).__name__}: {error}", notebook)
    finally:
        remove_tree(runtime)  # the kernel could write in it before the runner took it back


def _run_in_runner(job: dict, notebook: nbformat.NotebookNode, wall_seconds: int) -> Execution:
    request = json.dumps(job, ensure_ascii=False).encode()
    # The reply is the notebook as sent, plus what the budgets let the kernel add (its JSON, or base64 for binary
    # widget buffers, is at most twice what was counted), plus language_info and the kernel's log.
    reply_limit = len(request) + 2 * NOTEBOOK_BUDGET + LANGUAGE_INFO_BYTES + 4 * KERNEL_LOG_BYTES + 2**20
    runner = _take_runner()
    # A runner that does not answer in time is killed, which ends the pipe and so any read below.
    overdue = threading.Timer(wall_seconds + RUNNER_GRACE_SECONDS, runner.kill)
    overdue.start()
    cell = None
    try:
        with runner.stdin:
            runner.stdin.write(request)
        while line := runner.stdout.readline(reply_limit):
            if not line.endswith(b"\n"):
                raise ValueError(f"the runner's reply is larger than the {reply_limit:,} bytes it can be")
            reply = json.loads(line)
            if "cell" in reply:
                cell = reply["cell"]
                continue
            executed = nbformat.from_dict(reply["notebook"])
            return Execution(reply["status"], reply["message"], executed, reply["kernel_log"])
        runner.wait()
        if not overdue.is_alive():
            message = f"the notebook ran longer than the {wall_seconds} s allowed (in cell {cell}) and did not stop"
            return Execution("timeout", message, notebook)
        return Execution("error", _runner_death(runner.returncode, cell), notebook)
    finally:
        overdue.cancel()
        runner.kill()  # an answered runner is exiting already; this only makes sure
        runner.wait()
        runner.stdout.close()


_spare: list[subprocess.Popen] = []  # the runner started ahead, waiting for its job
_spare_lock = threading.Lock()


def warm_up() -> None:
    """Start a runner ahead of the first notebook, so that its imports overlap the grader's own."""
    with _spare_lock:
        if not _spare:
            _spare.append(_start_runner())


def _take_runner() -> subprocess.Popen:
    """The spare runner, if it still waits, and a new spare for the next notebook."""
    with _spare_lock:
        runner = _spare.pop() if _spare else None
        _spare.append(_start_runner())
    return runner if runner is not None and runner.poll() is None else _start_runner()


def _start_runner() -> subprocess.Popen:
    argv = [sys.executable, "-I", __file__, str(os.getpid())]  # the runner ends when this process does
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


@atexit.register
def _stop_spare() -> None:
    for runner in _spare:  # it exits at the end of its stdin, before reading a job
        runner.stdin.close()
        runner.wait()
        runner.stdout.close()


def _runner_death(returncode: int, cell: int | None) -> str:
    if returncode in (RUNNER_OUT_OF_MEMORY, -signal.SIGABRT):  # ZeroMQ aborts when an allocation fails
        cause = (
            f"ran out of the {RUNNER_MEMORY_BYTES // 2**20} MB it may hold: the kernel sent it more than that "
            "(output, widget state or other messages)"
        )
    elif returncode < 0:
        cause = f"was killed by {signal.Signals(-returncode).name}"
    else:
        cause = f"ended with exit code {returncode}"
    return (
        f"the grader's runner of this notebook {cause} in cell {cell}; the outputs are lost, what the notebook "
        "logged is still graded"
    )


# ---------------------------------------------------------------------------------------------------------------
# In the runner: python -I execute.py, the job as JSON on stdin, the replies as JSON lines on stdout.


def _serve() -> None:
    _end_with(int(sys.argv[1]))
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    cap = RUNNER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(RUNNER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))  # the soft limit: the kernel's sandbox sets its own
    request = sys.stdin.buffer.read()
    if not request:
        return  # a spare runner the grader did not need
    job = json.loads(request)
    replies = os.fdopen(os.dup(1), "wb")  # before KernelLog takes fd 1 over

    def say(reply: dict) -> None:
        replies.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
        replies.flush()

    log = KernelLog()
    notebook = nbformat.from_dict(job["notebook"])
    try:
        execution = _execute(notebook, job, say)
    except MemoryError:
        os._exit(RUNNER_OUT_OF_MEMORY)  # no room left to say more; the exit code says it
    except Exception:  # a bug of the grader's: the row says so instead of the runner dying silently
        execution = Execution("error", f"the grader's runner failed:\n{traceback.format_exc()[-2000:]}", notebook)
    reply = {"status": execution.status, "message": execution.message, "kernel_log": log.text()}
    say({**reply, "notebook": _sanitised(execution.notebook)})


def _end_with(grader: int) -> None:
    """End this runner, and so the kernel's sandbox (bwrap --die-with-parent), soon after the grader process that
    started it is gone: a grader killed with SIGKILL, or a Dask worker lost mid-grade, cannot end them itself, and
    the notebook would run on beside the retry. The grader's pid is given, not read here: it may be gone already."""

    def watch() -> None:
        while os.getppid() == grader:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(RUNNER_ORPHANED)

    threading.Thread(target=watch, daemon=True).start()


def _execute(notebook: nbformat.NotebookNode, job: dict, say: Callable[[dict], None]) -> Execution:
    limits = job["limits"]
    workdir, runtime = Path(job["workdir"]), Path(job["runtime"])
    watchdog = Watchdog(limits["wall_seconds"])
    current_cell = {"index": None}
    errors = []

    def cell_started(cell, cell_index):
        current_cell["index"] = cell_index
        say({"cell": cell_index})

    def cell_failed(cell, cell_index, execute_reply):  # from the reply: the error's output may have been dropped
        content = execute_reply["content"]
        errors.append(f"cell {cell_index} raised {content.get('ename')}: {content.get('evalue')}"[:500])

    kernel = {}  # its process, kept past nbclient's cleanup (which forgets it) for the exit status

    def notebook_started(notebook):
        kernel["process"] = client.km.provisioner.process
        watchdog.watch(client.km.provisioner.pgid)

    client = CappedNotebookClient(
        notebook,
        cell_budget=max(OUTPUT_KEPT_FACTOR * limits["output_bytes"], CELL_BUDGET_FLOOR),
        km=SandboxedKernelManager(job["command"], runtime),
        timeout=limits["cell_seconds"],
        allow_errors=True,
        record_timing=False,
        # Once the last cell has run, nothing of the student's may run on (atexit hooks, threads): the kernel is
        # killed, not asked to shut down, which also stops a kernel that would ignore the asking.
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(workdir)}},
        on_notebook_start=notebook_started,
        on_cell_start=cell_started,
        on_cell_error=cell_failed,
    )
    try:
        client.execute(cleanup_kc=True, env=job["env"])
        status, message = ("error", errors[0]) if errors else ("graded", "all cells ran")
    except KernelSentTooMuch as error:
        status, message = "error", f"cell {current_cell['index']}: {error}"
    except CellTimeoutError:
        status = "timeout"
        message = f"cell {current_cell['index']} ran longer than the {limits['cell_seconds']} s allowed for one cell"
    except DeadKernelError:
        status = "timeout" if watchdog.fired else "kernel_died"
        message = (
            f"the notebook ran longer than the {limits['wall_seconds']} s allowed and was stopped "
            f"in cell {current_cell['index']}"
            if watchdog.fired
            else f"the kernel died in cell {current_cell['index']}: {_kernel_death(kernel.get('process'))}"
        )
    except MemoryError:
        raise
    except Exception as error:  # the kernel did not start or stopped answering
        status = "timeout" if watchdog.fired else "kernel_died"
        message = f"the kernel failed: {type(error).__name__}: {error}"
    finally:
        watchdog.kill()  # whatever the kernel left running in its process group goes with it
    return Execution(status, message, notebook)


def _kernel_death(process: subprocess.Popen | None) -> str:
    """How the kernel process ended. The sandbox's supervisor, and bwrap after it, pass its exit status on, a
    signal as 128 + its number, as a shell does."""
    try:
        returncode = process.wait(timeout=KERNEL_EXIT_SECONDS)
    except (AttributeError, subprocess.TimeoutExpired):
        return "it stopped answering (crash, os._exit or out of memory)"
    try:
        name = signal.Signals(-returncode if returncode < 0 else returncode - 128).name
    except ValueError:
        return f"it ended with exit code {returncode} (os._exit, or a crash that reported itself)"
    return f"it was killed by {name} ({SIGNAL_CAUSES.get(name, 'a signal from outside, or its own os.kill')})"


def _sanitised(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The two things of the kernel's that reach the notebook without passing the budgets' checks: an execution
    count it sent for a cell that did not finish, and the language_info of its kernel_info reply."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and not isinstance(cell.get("execution_count"), int | None):
            cell.execution_count = None
    info = notebook.metadata.get("language_info")
    if info is not None and not (
        isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and len(json.dumps(info, default=str)) <= LANGUAGE_INFO_BYTES
    ):
        notebook.metadata.language_info = {"name": "python"}
    return notebook


class KernelLog:
    """The runner's own stdout and stderr, which the kernel inherits, become a pipe of which the last
    KERNEL_LOG_BYTES are kept: nothing the kernel, its sandbox or the runner prints reaches the grader's terminal."""

    def __init__(self):
        reader, writer = os.pipe()
        os.dup2(writer, 1)
        os.dup2(writer, 2)
        os.close(writer)
        self.tail = bytearray()
        threading.Thread(target=self._drain, args=(reader,), daemon=True).start()

    def _drain(self, reader: int) -> None:
        while chunk := os.read(reader, 65536):
            self.tail += chunk
            del self.tail[:-KERNEL_LOG_BYTES]

    def text(self) -> str:
        return bytes(self.tail).decode(errors="replace")


def _bounded_context() -> zmq.asyncio.Context:
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, FRAME_BYTES)  # defaults for every socket made from this context
    context.setsockopt(zmq.RCVHWM, QUEUED_MESSAGES)
    return context


class BoundedChannel(AsyncZMQSocketChannel):
    """A channel that drops (and counts) what is not a Jupyter message, and notices ZeroMQ dropping a connection:
    it does so on a frame over FRAME_BYTES, and never connects again by itself. The channel does, at once."""

    def __init__(self, socket: zmq.asyncio.Socket, session, loop=None):
        super().__init__(socket, session, loop)
        # Set by the client: how to connect again, and what else a broken connection means on this channel.
        self.reconnect: Callable[[], zmq.asyncio.Socket] | None = None
        self.after_disconnection: Callable[[], Awaitable[None]] | None = None
        self.malformed = 0
        self.disconnections = 0
        self._watch(socket)

    def _watch(self, socket: zmq.asyncio.Socket) -> None:
        self.socket = socket
        self.monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.poller = zmq.asyncio.Poller()
        self.poller.register(socket, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def _connect_again(self) -> None:
        self.disconnections += 1
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)
        self._watch(self.reconnect())

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            ready = dict(await self.poller.poll(left))
            if self.monitor in ready:
                await self.monitor.recv_multipart()
                self._connect_again()
                if self.after_disconnection is not None:
                    await self.after_disconnection()
            elif self.socket in ready:
                frames = await self.socket.recv_multipart()
                message = self._deserialize(frames)
                if message is not None:
                    message[WIRE_BYTES] = sum(map(len, frames))
                    return message
                self.malformed += 1
            else:
                raise Empty

    def _deserialize(self, frames: list[bytes]) -> dict | None:
        try:
            message = self.session.deserialize(self.session.feed_identities(frames)[1])
        except Exception:  # a bad signature, not JSON, a missing part: the kernel's garbage, dropped
            return None
        parts = ("header", "parent_header", "metadata", "content")
        well_formed = all(isinstance(message.get(part), dict) for part in parts)
        return message if well_formed and isinstance(message.get("msg_type"), str) else None


class BoundedKernelClient(AsyncKernelClient):
    """jupyter_client's client with bounded sockets; the channels nbclient reads are BoundedChannels."""

    shell_channel_class = Type(BoundedChannel)
    iopub_channel_class = Type(BoundedChannel)

    def _context_default(self) -> zmq.asyncio.Context:
        self._created_context = True
        return _bounded_context()

    def start_channels(self, *args, **kwargs) -> None:
        super().start_channels(*args, **kwargs)
        self.shell_channel.reconnect = lambda: self.connect_shell(identity=self.session.bsession)
        self.shell_channel.after_disconnection = self._reply_refused
        self.iopub_channel.reconnect = self.connect_iopub

    async def _reply_refused(self) -> None:
        """The shell connection broke: a kernel that died broke it (nbclient says so), else the reply was refused
        and will never come, so the cell cannot end by itself."""
        await asyncio.sleep(DEATH_SECONDS)
        if await self.parent.is_alive():
            raise KernelSentTooMuch(
                f"the kernel sent a reply larger than the {FRAME_BYTES // 2**20} MB the grader takes (a huge "
                "exception message?); the notebook was stopped there"
            )


class SandboxedKernelManager(AsyncKernelManager):
    """Starts ipykernel with ``command`` (the sandbox's, made by the grader), its sockets in ``runtime``, and
    connects only once they are sockets in a folder the sandbox can no longer change: the runner connects by path,
    and reconnects, and must never be led through a link planted there."""

    def __init__(self, command: list[str], runtime: Path):
        super().__init__(
            transport="ipc",
            ip=str(runtime / "kernel"),
            connection_file=str(runtime / CONNECTION_FILE),
            client_factory=BoundedKernelClient,
        )
        self.command = command
        self.runtime = runtime
        self.session.packer = PACKER  # the client's too: it is given this session

    @default("context")
    def _context_default(self) -> zmq.asyncio.Context:
        self._created_context = True
        return _bounded_context()

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return self.command

    async def _async_post_start_kernel(self, **kw) -> None:
        await self._take_sockets_back()
        await super()._async_post_start_kernel(**kw)

    async def _take_sockets_back(self) -> None:
        ports = (self.shell_port, self.iopub_port, self.stdin_port, self.control_port, self.hb_port)
        sockets = [Path(f"{self.ip}-{port}") for port in ports]
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        while not all(os.path.lexists(path) for path in sockets):
            if not await self.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the kernel did not open its sockets")
            await asyncio.sleep(0.02)
        os.chown(self.runtime, os.geteuid(), os.getegid())  # as root, from the sandbox uid back to the grader
        # Still searchable: the starting kernel reads its connection file again, after binding its sockets.
        os.chmod(self.runtime, 0o711)
        for path in sockets:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise RuntimeError(f"the kernel put something other than a socket at {path.name}")


class CappedNotebookClient(NotebookClient):
    """nbclient, keeping only what the budgets allow of what the kernel sends while the notebook runs.

    Every message a cell receives costs its size on the wire plus MESSAGE_COST, against the cell's budget and
    the notebook's; past either, the cell's messages are dropped (a stream that overflows keeps its start), all
    but the status that ends the cell, of which nothing is kept. Outputs, errors, display updates, comm traffic
    and widget state all pass through here, so all of them are bounded. What was dropped is said at the end of
    the cell's outputs."""

    cell_budget = Integer(CELL_BUDGET_FLOOR, help="bytes the kernel may send per cell")
    notebook_budget = Integer(NOTEBOOK_BUDGET, help="bytes the kernel may send in the whole notebook")

    def reset_execution_trackers(self) -> None:
        super().reset_execution_trackers()
        self.notebook_spent = 0
        self.cell_spent = 0
        self.dropped = 0
        self.malformed = 0

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self.cell_spent = self.dropped = self.malformed = 0
        died = False
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except DeadKernelError:
            died = True  # its connections broke because it died: nothing to say about them
            raise
        finally:
            if self.kc is not None and not died:
                self._say_what_was_dropped(cell)

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] == "status":
            state = msg["content"].get("execution_state")
            return super().process_message({**msg, "content": {"execution_state": state}}, cell, cell_index)
        cost = msg[WIRE_BYTES] + MESSAGE_COST
        room = min(self.cell_budget - self.cell_spent, self.notebook_budget - self.notebook_spent)
        if cost > room:
            self.dropped += 1
            msg = _clipped_stream(msg, room - MESSAGE_COST)
            if msg is None:
                return None
            cost = room
        self.cell_spent += cost
        self.notebook_spent += cost
        try:
            return super().process_message(msg, cell, cell_index)
        except CellControlSignal:
            raise
        except Exception:  # a message that is well formed but whose content is not what its type says
            self.malformed += 1
            return None

    def _say_what_was_dropped(self, cell) -> None:
        channels = (self.kc.iopub_channel, self.kc.shell_channel)
        disconnections = sum(channel.disconnections for channel in channels)
        malformed = self.malformed + sum(channel.malformed for channel in channels)
        for channel in channels:
            channel.disconnections = channel.malformed = 0
        said = []
        if self.dropped:
            budget = min(self.cell_budget, self.notebook_budget)
            said.append(f"{self.dropped} message(s) past the {budget:,} bytes a cell may send")
        if disconnections:
            said.append(
                f"what came while the connection to the kernel was made again ({disconnections} time(s): "
                f"ZeroMQ drops it on a frame over {FRAME_BYTES // 2**20} MB, or a message it has no memory left for)"
            )
        if malformed:
            said.append(f"{malformed} message(s) that were not valid Jupyter messages")
        if said and cell.cell_type == "code":
            notice = f"\n[the grader dropped some of this cell's output: {'; '.join(said)}]\n"
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=notice))


def _clipped_stream(msg: dict, room: int) -> dict | None:
    text = msg["content"].get("text")
    if msg["msg_type"] != "stream" or not isinstance(text, str) or room <= 0:
        return None
    return {**msg, "content": {**msg["content"], "text": text[:room]}}


class Watchdog:
    """Kills the kernel's whole process group once the notebook has used up its time."""

    def __init__(self, seconds: float):
        self.pgid: int | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def watch(self, pgid: int | None) -> None:
        self.pgid = pgid
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        self.kill()

    def kill(self) -> None:
        self._timer.cancel()
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
                os.killpg(self.pgid, signal.SIGKILL)


if __name__ == "__main__":
    _serve()
