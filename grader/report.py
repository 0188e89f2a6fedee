"""Write what grading found: result.json, feedback.html and the executed notebook per student; the gradebook.

Everything shown comes from the student's notebook or store, so it is text everywhere (HTML-escaped, never
mathtext), and what stays in ``OUT/NAME`` fits the rubric's ``kept_bytes``. A report that cannot be made whole
loses a part (the plot, the notebook) with a note, never the score.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import jinja2
import nbformat
from markupsafe import Markup, escape

from grader import i18n, sandbox
from grader.result import Result
from grader.rubric import Rubric

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("grader", "templates"),
    autoescape=True,  # every value shown comes from the student's notebook or store
    trim_blocks=True,
    lstrip_blocks=True,
)
GRADEBOOK = "gradebook.csv"
INDEX = "index.html"  # the class report, written by grader/class_report.py
KERNEL_LOG = "kernel.log"  # in OUT/NAME: what the kernel printed outside its cells, when the run did not end well
# The grader's own files at the top of OUT: a submission named like one would overwrite it.
RESERVED_NAMES = frozenset({GRADEBOOK, INDEX})
PLOTTED_RUNS = 40  # the best ones; a plot of thousands of bars is neither readable nor small
LISTED_RUNS = 200
SHOWN_CHARS = 120  # of a run's name or model_type in the feedback


def warm_up() -> None:
    """Import matplotlib ahead of the first plot."""
    import matplotlib.figure  # noqa: F401


def executed_notebook_name(student: str) -> str:
    name = f"{student}.ipynb"
    return name if len(name.encode()) <= 255 else "submission.ipynb"  # a file name has at most 255 bytes


def language_of(result: Result, language: str | None = None) -> str:
    """The language asked for, else the one the result was graded in (``--lang``, the rubric's), else English."""
    return i18n.checked_language(language or getattr(result, "language", None))


def html_words(language: str):
    """``say(key, **values)``: a ``report`` template as HTML, its values escaped (``Markup`` values kept as such)."""
    templates = i18n.messages("report", language).templates
    return lambda key, /, **values: Markup(escape(templates[key])).format(**values)


def code(text: object) -> Markup:
    return Markup("<code>{}</code>").format(text)


def status_meaning(status: str, language: str) -> str:
    return i18n.messages("statuses", language).templates.get(status, "")


def write_submission(
    result: Result,
    notebook: nbformat.NotebookNode | None,
    folder: Path,
    rubric: Rubric,
    language: str | None = None,
) -> None:
    """result.json, feedback.html and the executed notebook, within ``kept_bytes`` together."""
    folder.mkdir(parents=True, exist_ok=True)
    language = language_of(result, language)
    say = i18n.messages("report", language)
    notes = []
    summary = json.dumps(result.to_json(), indent=2) + "\n"
    plot = _safe_plot(result.details.get("runs", []), rubric.rank_by, notes, language)
    executed = _executed_notebook(notebook, rubric) if notebook is not None else None
    kernel_log = result.kernel_log.encode(errors="backslashreplace")
    budget = rubric.kept_bytes - len(summary.encode()) - len(kernel_log)
    page = _feedback(result, rubric, plot, notes, language)
    if plot and len(page.encode(errors="backslashreplace")) > budget:
        notes.append(say("feedback.plot_left_out"))
        plot = None
        page = _feedback(result, rubric, plot, notes, language)
    budget -= len(page.encode(errors="backslashreplace"))
    # A kernel can print lone surrogates ("\udcff" in its JSON): written as escapes, never a lost report.
    executed_bytes = len(executed.encode(errors="backslashreplace")) if executed is not None else 0
    if executed is not None and executed_bytes > budget:
        notes.append(say("feedback.notebook_not_kept", size=executed_bytes, budget=max(budget, 0)))
        executed = None
        page = _feedback(result, rubric, plot, notes, language)
    (folder / "result.json").write_text(summary)
    (folder / "feedback.html").write_text(page, errors="backslashreplace")
    if kernel_log:
        (folder / KERNEL_LOG).write_bytes(kernel_log)
    if executed is not None:
        (folder / executed_notebook_name(result.student)).write_text(executed, errors="backslashreplace")


def discard_artifacts(workdir: Path) -> None:
    """The working directory holds the store and models: heavy, and rebuilt by re-grading."""
    sandbox.remove_tree(workdir)  # student code may have nested folders too deep for shutil.rmtree


def write_gradebook(results: list[Result], out: Path) -> Path:
    """One row per student, sorted, replaced atomically: a reader (or a killed grader) never sees half a file.

    A column per check of the rubric, in its order (every graded or rejected row lists them all). UTF-8 without
    a byte-order mark, comma-separated, CRLF line ends (RFC 4180): what an LMS's grade import (Moodle's) and
    every CSV reader take as-is; homework/README.md documents the columns and the choice.
    """
    check_ids = list(dict.fromkeys(check.id for result in results for check in result.checks))
    path = out / GRADEBOOK
    with replaced_atomically(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["student", "status", "score", "max_score", *check_ids, "flags"])
        for result in sorted(results, key=lambda result: result.student):  # re-grading yields the same file
            row = [_spreadsheet_safe(result.student), result.status, result.score, result.max_score]
            writer.writerow(row + [result.points(check) for check in check_ids] + [" ".join(result.flags)])
    return path


@contextlib.contextmanager
def replaced_atomically(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """A text stream whose content replaces ``path`` in one rename when the block ends, or never."""
    descriptor, partial = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        # A file name need not be valid UTF-8: its undecodable bytes are written as escapes, never a crash.
        with os.fdopen(descriptor, "w", newline=newline, encoding="utf-8", errors="backslashreplace") as stream:
            yield stream
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _spreadsheet_safe(text: str) -> str:
    """A name a spreadsheet would run as a formula (=, +, -, @ first) gets a leading quote, as OWASP advises."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _feedback(result: Result, rubric: Rubric, plot: str | None, notes: list[str], language: str) -> str:
    runs = result.details.get("runs", [])
    listed = [
        {**run, "name": _shown(run["name"]), "model_type": _shown(run["model_type"])} for run in runs[:LISTED_RUNS]
    ]
    say = html_words(language)
    return TEMPLATES.get_template("feedback.html.j2").render(
        result=result,
        rubric=rubric,
        plot=plot,
        notes=notes,
        runs=listed,
        unlisted=len(runs) - len(listed),
        language=language,
        say=say,
        code=code,
        status_meaning=status_meaning(result.status, language),
        production_label=_production_label(rubric, say),
    )


def _production_label(rubric: Rubric, say) -> Markup | None:
    """How the page names the version the rubric serves ("in stage 'Production'"); None if it serves none."""
    served = getattr(rubric, "served", None)  # a rubric of checks names it by a selector
    if served is not None:
        by, name = served.by, served.name
    elif getattr(rubric, "registered_model", None) and hasattr(rubric, "production_stage"):
        by = rubric.production_by
        name = rubric.production_alias if by == "alias" else rubric.production_stage
    else:
        return None
    return say(f"feedback.{by}_label", **{by: name})


def _executed_notebook(notebook: nbformat.NotebookNode, rubric: Rubric) -> str:
    return nbformat.writes(_truncated(notebook, rubric.limits.output_bytes))


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
    encoded = text.encode(errors="backslashreplace")  # a kernel's text may hold lone surrogates
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore") + f"\n[... output truncated by the grader at {limit} bytes]"


def _shown(text: str | None) -> str | None:
    return text if text is None or len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def _safe_plot(runs: list[dict], rank_by: str, notes: list[str], language: str) -> str | None:
    try:
        return _runs_plot(runs, rank_by, language)
    except Exception as error:  # the plot is a convenience: its failure must not cost the feedback or the grade
        notes.append(i18n.messages("report", language)("feedback.plot_failed", error=type(error).__name__))
        return None


def _runs_plot(runs: list[dict], rank_by: str, language: str = i18n.DEFAULT_LANGUAGE) -> str | None:
    """A PNG (base64) of the best runs' metric, best at the top, the Production run marked."""
    ranked = [run for run in runs if run["metric"] is not None][:PLOTTED_RUNS]
    if not ranked:
        return None
    from matplotlib.figure import Figure  # the object API: no global pyplot state shared between threads

    figure = Figure(figsize=(7, 0.35 * len(ranked) + 1.2), dpi=80)
    axes = figure.subplots()
    # An unescaped "$" would make matplotlib typeset the student's text as a formula (and a typo in it raise).
    labels = [
        f"{run['rank']}. {_shown(run['model_type']) or '?'} {run['run_id'][:8]}".replace("$", r"\$") for run in ranked
    ]
    colours = ["#d62728" if run["production"] else "#9ecae1" for run in ranked]
    axes.barh(range(len(ranked)), [run["metric"] for run in ranked], color=colours)
    axes.set_yticks(range(len(ranked)), labels)
    axes.invert_yaxis()
    say = i18n.messages("report", language)
    axes.set_xlabel(say("feedback.plot_axis", metric=rank_by).replace("$", r"\$"))
    for index, run in enumerate(ranked):
        if run["production"]:
            marker = say("feedback.plot_marker")
            axes.annotate(marker, (run["metric"], index), va="center", color="#d62728", fontweight="bold")
    axes.set_title(say("feedback.plot_title"))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()
