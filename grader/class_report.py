"""OUT/index.html: the class at a glance, for the instructor.

The distribution of scores, how many pass each check, the statuses, the submissions the grader flagged, and every
student linked to their feedback. Rewritten atomically as each submission finishes, so an interrupted batch leaves
a whole page about what was graded. Plain HTML and CSS (no script, no image): it opens from the disk, in any
browser, and a student's name is only ever text in it (autoescaped) and a percent-encoded link.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from markupsafe import Markup

from grader import i18n, report
from grader.result import Result
from grader.rubric import Rubric

FEEDBACK = "feedback.html"
MOST_BARS = 20  # a histogram of more bars than this groups scores into ranges


@dataclass(frozen=True)
class Bar:
    low: int
    high: int
    count: int
    height: float  # percent of the tallest bar

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}–{self.high}"


def write_index(
    results: list[Result], rubric: Rubric, out: Path, language: str | None = None, pending: int = 0
) -> Path:
    """Write ``out/index.html`` about ``results`` (``pending``: submissions still being graded).

    The page is a convenience beside the gradebook: if it cannot be drawn, it says so and the batch goes on.
    """
    language = _language(results, rubric, language)
    path = out / report.INDEX
    try:
        page = render(results, rubric, out, language, pending)
    except Exception as error:
        page = f"<!DOCTYPE html><title>index</title><p>The class report could not be drawn ({type(error).__name__})."
        page += f" {report.GRADEBOOK} is complete.</p>"
    with report.replaced_atomically(path) as stream:
        stream.write(page)
    return path


def render(results: list[Result], rubric: Rubric, out: Path, language: str, pending: int = 0) -> str:
    results = sorted(results, key=lambda result: result.student)
    scores = [result.score for result in results]
    say = report.html_words(language)
    return report.TEMPLATES.get_template("index.html.j2").render(
        language=language,
        say=say,
        code=report.code,
        rubric=rubric,
        max_score=rubric.max_score,
        results=results,
        pending=pending,
        mean=_number(f"{statistics.fmean(scores):.1f}", language) if scores else "–",
        median=_number(f"{statistics.median(scores):g}", language) if scores else "–",
        bars=histogram(scores, rubric.max_score),
        checks=check_rates(results),
        statuses=status_counts(results, language),
        flagged=[(result, _flag_meanings(result.flags, language)) for result in results if result.flags],
        unisolated=sum("not_isolated" in result.flags for result in results),
        links={result.student: feedback_link(out, result.student) for result in results},
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        gradebook_link=Markup('<a href="{0}">{0}</a>').format(report.GRADEBOOK),
    )


def histogram(scores: list[int], max_score: int) -> list[Bar]:
    """One bar per possible score, or per range of scores when there would be more than ``MOST_BARS``."""
    top = max([max_score, *scores], default=0)
    width = max(1, math.ceil((top + 1) / MOST_BARS))
    counts = Counter(max(score, 0) // width for score in scores)
    tallest = max(counts.values(), default=0)
    return [
        Bar(
            start * width,
            min(start * width + width - 1, top),
            counts[start],
            100 * counts[start] / tallest if tallest else 0,
        )
        for start in range(top // width + 1)
    ]


def check_rates(results: list[Result]) -> list[dict]:
    """Each check, in the rubric's order: its points and how many of the submissions that have it passed it."""
    rows: dict[str, dict] = {}
    for result in results:
        for check in result.checks:
            row = rows.setdefault(check.id, {"id": check.id, "points": check.max_points, "passed": 0, "total": 0})
            row["total"] += 1
            row["passed"] += check.passed
    for row in rows.values():
        row["rate"] = round(100 * row["passed"] / row["total"])
    return list(rows.values())


def status_counts(results: list[Result], language: str) -> list[tuple[str, str, int]]:
    """(status, what it means, how many), in the order the statuses catalogue lists them."""
    counts = Counter(result.status for result in results)
    known = list(i18n.messages("statuses", language).templates)
    ordered = sorted(counts, key=lambda status: (known.index(status) if status in known else len(known), status))
    return [(status, report.status_meaning(status, language), counts[status]) for status in ordered]


def feedback_link(out: Path, student: str) -> str | None:
    """A relative link to the student's page, percent-encoded from the name's bytes; None if there is no page."""
    if not (out / student / FEEDBACK).is_file():
        return None
    return f"{quote(os.fsencode(student), safe='')}/{FEEDBACK}"


def _number(text: str, language: str) -> str:
    return text.replace(".", i18n.messages("report", language)("index.decimal_separator"))


def _flag_meanings(flags: list[str], language: str) -> list[tuple[str, str]]:
    meanings = i18n.messages("report", language).templates
    return [(flag, meanings.get(f"flags.{flag}", meanings["flags.unknown"])) for flag in flags]


def _language(results: list[Result], rubric: Rubric, language: str | None) -> str:
    """The language asked for, else the one the results were graded in, else the rubric's, else English."""
    graded_in = next((getattr(result, "language", None) for result in results), None)
    return i18n.checked_language(language or graded_in or getattr(rubric, "language", None))
