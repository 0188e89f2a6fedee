"""Execute a student's notebook in its working directory, through the sandbox, with time limits.

The kernel talks to nbclient over jupyter_client's ``ipc`` transport (unix sockets in the working directory),
so a sandbox that takes the network away from it still lets the grader drive it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import Integer

from grader.sandbox import Limits, Sandbox

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, terminator included);
# jupyter_client appends "-<port>" to the ipc path.
MAX_SOCKET_PATH = 100
# Output held in memory per cell while the notebook runs, as a multiple of what the saved notebook keeps.
OUTPUT_KEPT_FACTOR = 10


@dataclass
class Execution:
    status: str  # graded, error, timeout or kernel_died
    message: str
    notebook: nbformat.NotebookNode


class SandboxedKernelManager(AsyncKernelManager):
    """Starts ipykernel through ``sandbox.command``, connected by unix sockets in ``workdir``."""

    def __init__(self, sandbox: Sandbox, workdir: Path, launch_prefix: list[str]):
        socket_base = workdir / "kernel-ipc"
        if len(str(socket_base)) > MAX_SOCKET_PATH:
            raise ValueError(f"working directory path too long for the kernel's unix sockets: {workdir}")
        super().__init__(transport="ipc", ip=str(socket_base), connection_file=str(workdir / "kernel.json"))
        self.sandbox = sandbox
        self.workdir = workdir
        self.launch_prefix = launch_prefix

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]
        return self.launch_prefix + self.sandbox.command(kernel, self.workdir)


class CappedNotebookClient(NotebookClient):
    """Drops outputs as they arrive once a cell, or the notebook, has printed too much.

    nbclient keeps every output message in the grader's memory until the notebook ends, and a cell can print for
    as long as its time allows; the saved notebook is truncated further afterwards."""

    cell_budget = Integer(2**20, help="bytes of output kept in memory per cell")
    notebook_budget = Integer(32 * 2**20, help="bytes of output kept in memory for the whole notebook")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept: dict[int, int] = {}

    def output(self, outs, msg, display_id, cell_index):
        content = msg["content"]
        size = len(content.get("text", "")) + sum(len(str(value)) for value in content.get("data", {}).values())
        kept = self.kept.get(cell_index, 0)
        room = min(self.cell_budget - kept, self.notebook_budget - sum(self.kept.values()))
        if size <= room:
            self.kept[cell_index] = kept + size
            return super().output(outs, msg, display_id, cell_index)
        if room <= 0:
            return None  # already said so
        if msg["msg_type"] == "stream":  # keep the start of the text that overflows
            clipped = {**msg, "content": {**content, "text": content["text"][:room]}}
            super().output(outs, clipped, display_id, cell_index)
        self.kept[cell_index] = self.cell_budget  # nothing more for this cell
        notice = "\n[the grader dropped the rest of this cell's output: too much output]\n"
        outs.append(nbformat.v4.new_output("stream", name="stderr", text=notice))
        return None


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


def run_notebook(
    notebook: nbformat.NotebookNode,
    workdir: Path,
    sandbox: Sandbox,
    limits: Limits,
    env: dict[str, str],
    launch_prefix: list[str],
) -> Execution:
    """Run every cell (errors do not stop it) and say how the run ended."""
    watchdog = Watchdog(limits.wall_seconds)
    current_cell = {"index": None}
    client = CappedNotebookClient(
        notebook,
        cell_budget=max(OUTPUT_KEPT_FACTOR * limits.output_bytes, 2**20),
        km=SandboxedKernelManager(sandbox, workdir, launch_prefix),
        timeout=limits.cell_seconds,
        allow_errors=True,
        record_timing=False,
        resources={"metadata": {"path": str(workdir)}},
        on_notebook_start=lambda notebook: watchdog.watch(client.km.provisioner.pgid),
        on_cell_start=lambda cell, cell_index: current_cell.update(index=cell_index),
    )
    try:
        client.execute(cleanup_kc=True, env=env)
        status, message = _first_error(notebook)
    except CellTimeoutError:
        status = "timeout"
        message = f"cell {current_cell['index']} ran longer than the {limits.cell_seconds} s allowed for one cell"
    except DeadKernelError:
        status = "timeout" if watchdog.fired else "kernel_died"
        message = (
            f"the notebook ran longer than the {limits.wall_seconds} s allowed and was stopped "
            f"in cell {current_cell['index']}"
            if watchdog.fired
            else f"the kernel died in cell {current_cell['index']} (crash, os._exit or out of memory)"
        )
    except Exception as error:  # the kernel did not start or stopped answering
        status = "timeout" if watchdog.fired else "kernel_died"
        message = f"the kernel failed: {type(error).__name__}: {error}"
    finally:
        watchdog.kill()  # whatever the kernel left running in its process group goes with it
    return Execution(status, message, notebook)


def _first_error(notebook: nbformat.NotebookNode) -> tuple[str, str]:
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "error":
                return "error", f"cell {index} raised {output.ename}: {output.evalue}"[:500]
    return "graded", "all cells ran"
