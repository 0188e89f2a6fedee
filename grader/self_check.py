"""What ``python -m grader check`` prints: every check with what was found and, when it failed, what to do.

The words come from ``locales/LANG/report.toml`` ([self_check]); everything from the notebook or its store is
escaped for rich's markup, so a run named ``[red]…`` prints as written.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grader import i18n, report
from grader.result import Result
from grader.rubric import Rubric

MESSAGE_CHARS = 400


def say_checking(notebook: Path, rubric: Rubric, console: Console, language: str | None = None) -> None:
    say = i18n.messages("report", language or getattr(rubric, "language", None))
    console.print(escape(say("self_check.checking", notebook=notebook, rubric=rubric.path.name)))


def show(result: Result, notebook: Path, feedback: Path, console: Console, language: str | None = None) -> None:
    language = report.language_of(result, language)
    say = i18n.messages("report", language)
    table = Table(title=escape(say("self_check.title", notebook=notebook.name)), show_lines=True)
    for column in ("check", "points", "found", "what_to_do"):
        table.add_column(say(f"self_check.{column}"), overflow="fold")
    for check in result.checks:
        mark = f"[green]{say('self_check.passed')}[/]" if check.passed else f"[red]{say('self_check.failed')}[/]"
        hint = "" if check.passed else escape(check.hint or check.expected)
        table.add_row(
            f"{escape(check.id)}\n{mark}",
            f"{check.points}/{check.max_points}",
            escape(check.message[:MESSAGE_CHARS]),
            hint,
        )
    console.print(table)
    if result.status != "graded":
        meaning = report.status_meaning(result.status, language)
        line = say("self_check.status", status=result.status, meaning=meaning, message=result.message[:500])
        console.print(f"[red]{escape(line)}[/]")
    score = say("self_check.score", score=result.score, max_score=result.max_score)
    console.print(f"[bold]{escape(score)}[/] {escape(say('self_check.counts', feedback=feedback))}")
