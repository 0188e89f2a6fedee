"""The feedback page and the self-check in the result's language: every heading and fixed sentence from
locales/LANG/report.toml, English by default and word for word what it was before."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from grader import report, self_check
from grader.result import Result
from tests.reports import HOSTILE, RUBRIC, result

# The headings and fixed sentences of the feedback page of a failing submission, in each language.
FEEDBACK = {
    "en": ["Score: 1 / 16", "status <code>error</code>", "<h2>Checks</h2>", "<th>Expected</th>", "<th>Found</th>",
           '<td class="fail">failed</td>', "<strong>What to do:</strong>", "<h2>Best run and Production version</h2>",
           "Best run by <code>rmse_test</code>:", "Version in stage &#39;Production&#39; of <code>housing-best</code>:",
           "Graded with the rubric homework-195.rubric.toml. The executed notebook is beside this page.",
           "a cell raised an error; the checks graded what the notebook had left in MLflow by then"],
    "es": ["Puntuación: 1 / 16", "estado <code>error</code>", "<h2>Comprobaciones</h2>", "<th>Qué se pide</th>",
           "<th>Qué se encontró</th>", '<td class="fail">no superada</td>', "<strong>Qué hacer:</strong>",
           "<h2>Mejor ejecución y versión en producción</h2>", "Mejor ejecución según <code>rmse_test</code>:",
           "Versión de <code>housing-best</code> en la etapa &#39;Production&#39;:",
           "Calificado con la rúbrica homework-195.rubric.toml. El notebook ejecutado está junto a esta página.",
           "una celda lanzó un error; se calificó lo que el notebook había dejado en MLflow hasta ese momento",
           "ATENCIÓN: esta entrega NO se calificó en un entorno aislado"],
}  # fmt: skip
ENGLISH_ONLY = ["Checks", "What to do", "Expected", "Found", "passed", "failed", "Best run", "Score", "Graded with"]


def failing(language: str | None = None, isolated: bool = True) -> Result:
    graded = result(HOSTILE, "error", {"experiment"}, isolated=isolated)
    if language:
        graded.language = language  # as the checks helper's Result carries it
    return graded


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_feedback_page_of_a_failing_submission(tmp_path, language):
    report.write_submission(failing(isolated=language == "en"), None, tmp_path, RUBRIC, language=language)
    page = (tmp_path / "feedback.html").read_text()
    assert f'<html lang="{language}">' in page
    assert [sentence for sentence in FEEDBACK[language] if sentence not in page] == []
    assert HOSTILE not in page  # the name, in the title and the heading, is text
    if language == "es":
        text = re.sub(r"<[^>]+>", " ", page.split("<body>")[1])
        assert [word for word in ENGLISH_ONLY if re.search(rf"\b{word}\b", text)] == []


def test_the_page_speaks_the_results_language_unless_told_otherwise(tmp_path):
    report.write_submission(failing("es"), None, tmp_path / "es", RUBRIC)
    assert "<h2>Comprobaciones</h2>" in (tmp_path / "es" / "feedback.html").read_text()
    report.write_submission(failing("es"), None, tmp_path / "en", RUBRIC, language="en")
    assert "<h2>Checks</h2>" in (tmp_path / "en" / "feedback.html").read_text()


def test_notes_about_what_was_left_out_are_translated(tmp_path, monkeypatch):
    def broken(*args):
        raise ValueError("mathtext")

    monkeypatch.setattr(report, "_runs_plot", broken)
    graded = failing("es")
    graded.details = {"runs": [{"rank": 1, "run_id": "a" * 32, "name": "r", "model_type": "ridge", "metrics": {},
                                "metric": 0.5, "rescored": None, "has_model": False, "production": False}]}  # fmt: skip
    report.write_submission(graded, None, tmp_path, RUBRIC)
    page = (tmp_path / "feedback.html").read_text()
    assert "No se pudo dibujar el gráfico de tus ejecuciones (ValueError)." in page
    assert "ningún modelo que el calificador pudiera cargar" in page and "<td>falta</td>" in page


def console_output(graded: Result, language: str | None) -> str:
    console = Console(record=True, width=200, color_system=None)
    self_check.show(graded, Path("homework-195.ipynb"), Path("out/homework-195/feedback.html"), console, language)
    return console.export_text()


def test_the_self_check_in_english_says_what_it_always_said():
    text = console_output(failing(), None)
    assert "Self-check of homework-195.ipynb" in text
    assert "Score: 1 / 16 (self-check). The grade that counts is the one your instructor's grader gives" in text
    assert "error (a cell raised an error;" in text and "hint for runs" in text and "failed" in text


def test_the_self_check_in_spanish_on_a_failing_notebook():
    text = console_output(failing("es"), None)
    assert "Autocomprobación de homework-195.ipynb" in text
    for word in ("comprobación", "puntos", "qué se encontró", "qué hacer", "no superada", "superada"):
        assert word in text
    assert "Puntuación: 1 / 16 (autocomprobación)." in text
    assert "La nota que cuenta es la que te dé el calificador de tu profesor." in text
    assert "error (una celda lanzó un error;" in text
    assert not re.search(r"\b(passed|failed|Score|what to do)\b", text)


def test_rich_markup_in_a_message_is_printed_as_written():
    graded = failing()
    graded.checks[0].message = "[bold red]fake[/] [link=http://evil]x[/link]"
    assert "[bold red]fake[/] [link=http://evil]x[/link]" in console_output(graded, "en")


@pytest.mark.parametrize(
    ("by", "name", "english", "spanish"),
    [
        ("stage", "Production", "in stage &#39;Production&#39;", "en la etapa &#39;Production&#39;"),
        ("alias", "champion", "with alias &#39;champion&#39;", "con el alias &#39;champion&#39;"),
        ("version", "3", "number 3", "número 3"),
    ],
)
def test_the_served_version_of_a_rubric_of_checks_is_named_in_each_language(by, name, english, spanish):
    rubric = SimpleNamespace(served=SimpleNamespace(by=by, name=name))  # the rubric's selector (issue 16)
    assert report._production_label(rubric, report.html_words("en")) == english
    assert report._production_label(rubric, report.html_words("es")) == spanish
