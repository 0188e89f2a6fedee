"""What the sandbox costs per submission: bubblewrap against the plain fallback, in one run.

Two measurements, each repeated and interleaved so machine load hits both modes alike:
  * process: start ``python -c pass`` through ``sandbox.command`` (the probe pays this once per submission);
  * notebook: start an ipykernel over ipc through ``sandbox.command`` and run a two-cell notebook with nbclient
    (the kernel start every submission pays).

    python benchmarks/sandbox.py [--repetitions N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from grader import sandbox as sandboxes

NOTEBOOK_CELLS = ["import os, sys", "print(1 + 1, os.getuid())"]


def make_sandbox(mode: str) -> sandboxes.Sandbox:
    os.environ[sandboxes.ENV_VAR] = mode
    return sandboxes.create(sandboxes.Limits())


def time_process(sandbox: sandboxes.Sandbox, workdir: Path) -> float:
    sandbox.prepare(workdir)
    started = time.perf_counter()
    subprocess.run(
        sandbox.command([sys.executable, "-c", "pass"], workdir),
        cwd=workdir,
        env=sandbox.environment(workdir),
        check=True,
        start_new_session=True,
    )
    return time.perf_counter() - started


def time_notebook(sandbox: sandboxes.Sandbox, workdir: Path) -> float:
    class SandboxedKernel(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]
            return sandbox.command(kernel, workdir)

    sandbox.prepare(workdir)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in NOTEBOOK_CELLS])
    manager = SandboxedKernel(transport="ipc", ip=str(workdir / "kernel"), connection_file=str(workdir / "k.json"))
    started = time.perf_counter()
    NotebookClient(notebook, km=manager, timeout=60).execute(env=sandbox.environment(workdir))
    elapsed = time.perf_counter() - started
    sandbox.cleanup(workdir)
    return elapsed


def summarize(name: str, samples: dict[str, list[float]]) -> str:
    plain, isolated = statistics.median(samples["off"]), statistics.median(samples["bwrap"])
    return (
        f"{name:<9} plain {plain * 1000:7.0f} ms   bwrap {isolated * 1000:7.0f} ms   "
        f"difference {(isolated - plain) * 1000:+6.0f} ms   ratio {isolated / plain:5.2f}x   (medians)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    modes = {"off": make_sandbox("off"), "bwrap": make_sandbox("auto")}
    if not modes["bwrap"].isolated:
        print(f"bubblewrap is not usable here, nothing to compare: {modes['bwrap'].description}")
        return 1
    samples = {"process": {"off": [], "bwrap": []}, "notebook": {"off": [], "bwrap": []}}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as scratch:
        for repetition in range(args.repetitions):
            for mode, sandbox in modes.items():
                workdir = Path(scratch) / f"{mode}-{repetition}"
                samples["process"][mode].append(time_process(sandbox, workdir / "process"))
                samples["notebook"][mode].append(time_notebook(sandbox, workdir / "notebook"))
    print(f"{args.repetitions} repetitions each, {os.cpu_count()} CPUs")
    for name, by_mode in samples.items():
        print(summarize(name, by_mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
