"""Execute a notebook the way a learner would: fresh kernel, clean working directory, own tracking store."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import papermill

REPO = Path(__file__).resolve().parents[1]
WARNING_EXPLAINED_TAG = "warning-explained"
# Python warnings (FutureWarning, …), logger warnings ("WARNING mlflow…") and deprecation notices in any case.
WARNING_PATTERN = re.compile(r"warning\b|deprecat", re.IGNORECASE)


def execute(notebook: Path, workdir: Path, parameters: dict | None = None, timeout: int = 600):
    """Run ``notebook`` in ``workdir`` with MLflow's defaults there; return the executed notebook."""
    workdir.mkdir(parents=True, exist_ok=True)
    local_copy = workdir / notebook.name
    shutil.copy(notebook, local_copy)
    saved = {name: os.environ.pop(name, None) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        papermill.execute_notebook(
            str(local_copy),
            str(local_copy),
            parameters=parameters or {},
            cwd=str(workdir),
            kernel_name="python3",
            execution_timeout=timeout,
            progress_bar=False,
        )
    finally:
        os.environ.update({name: value for name, value in saved.items() if value is not None})
    return nbformat.read(local_copy, as_version=4)


def unexplained_warnings(executed) -> list[str]:
    """Warnings printed by cells that the lesson does not mark as explaining them."""
    found = []
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code" or WARNING_EXPLAINED_TAG in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("name") == "stderr" else ""
            for line in text.splitlines():
                if WARNING_PATTERN.search(line):
                    found.append(f"cell {index}: {line.strip()[:200]}")
    return found
