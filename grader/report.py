"""Write what grading found: result.json, feedback.html and the executed notebook per student; the gradebook."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from pathlib import Path

import jinja2
import nbformat

from grader.result import Result
from grader.rubric import CHECK_IDS, Rubric

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("grader", "templates"),
    autoescape=True,  # every value shown comes from the student's notebook or store
    trim_blocks=True,
    lstrip_blocks=True,
)
GRADEBOOK_COLUMNS = ["student", "status", "score", "max_score", *CHECK_IDS]


def warm_up() -> None:
    """Import matplotlib ahead of the first plot."""
    import matplotlib.figure  # noqa: F401


def write_submission(result: Result, notebook: nbformat.NotebookNode | None, folder: Path, rubric: Rubric) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    plot = _runs_plot(result.details.get("runs", []), rubric.rank_by)
    html = TEMPLATES.get_template("feedback.html.j2").render(result=result, rubric=rubric, plot=plot)
    (folder / "feedback.html").write_text(html)
    if notebook is not None:
        nbformat.write(_truncated(notebook, rubric.limits.output_bytes), folder / f"{result.student}.ipynb")


def discard_artifacts(workdir: Path) -> None:
    """The working directory holds the store and models: heavy, and rebuilt by re-grading."""
    shutil.rmtree(workdir, ignore_errors=True)


def write_gradebook(results: list[Result], out: Path) -> Path:
    path = out / "gradebook.csv"
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(GRADEBOOK_COLUMNS)
        for result in sorted(results, key=lambda result: result.student):  # re-grading yields the same file
            row = [result.student, result.status, result.score, result.max_score]
            writer.writerow(row + [result.points(check) for check in CHECK_IDS])
    return path


def _truncated(notebook: nbformat.NotebookNode, limit: int) -> nbformat.NotebookNode:
    """A copy whose every output keeps at most ``limit`` bytes of text; larger images are dropped."""
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output.text = _clip(output.text, limit)
            if "traceback" in output:
                output.traceback = [_clip(line, limit) for line in output.traceback[-50:]]
            for mime, value in list(output.get("data", {}).items()):
                if isinstance(value, str) and len(value) > limit:
                    output.data[mime] = _clip(value, limit) if mime.startswith("text/") else "[removed: too large]"
    return notebook


def _clip(text: str, limit: int) -> str:
    if len(text.encode()) <= limit:
        return text
    return text.encode()[:limit].decode(errors="ignore") + f"\n[... output truncated by the grader at {limit} bytes]"


def _runs_plot(runs: list[dict], rank_by: str) -> str | None:
    """A PNG (base64) of every run's metric, best at the top, the Production run marked."""
    ranked = [run for run in runs if run["metric"] is not None]
    if not ranked:
        return None
    from matplotlib.figure import Figure  # the object API: no global pyplot state shared between threads

    figure = Figure(figsize=(7, 0.35 * len(ranked) + 1.2), dpi=80)
    axes = figure.subplots()
    labels = [f"{run['rank']}. {run['model_type'] or '?'} {run['run_id'][:8]}" for run in ranked]
    colours = ["#d62728" if run["production"] else "#9ecae1" for run in ranked]
    axes.barh(labels, [run["metric"] for run in ranked], color=colours)
    axes.invert_yaxis()
    axes.set_xlabel(f"{rank_by} (lower is better)")
    for index, run in enumerate(ranked):
        if run["production"]:
            axes.annotate(" Production", (run["metric"], index), va="center", color="#d62728", fontweight="bold")
    axes.set_title("Your runs; red: the run of the Production version")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()
