"""OUT/index.html: the class at a glance, right about every number, hostile names shown as text, in English and
Spanish; written as the batch goes and whole after an interruption; rendered by a real Chromium."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest

from grader import __main__ as cli
from grader import batch, class_report, report
from grader.result import Result
from tests.reports import HOSTILE, REPO, RUBRIC, Tables, the_class, tiny_notebook, write_feedback_pages

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/system-deps.sh installs it when run as root)"
)


def index(tmp_path, results=None, **options) -> tuple[str, Tables]:
    results = the_class() if results is None else results
    write_feedback_pages(tmp_path, [graded for graded in results if graded.student != "nobody"])
    page = class_report.write_index(results, RUBRIC, tmp_path, **options).read_text()
    return page, Tables(page)


def test_the_page_summarises_the_class(tmp_path):
    page, tables = index(tmp_path)
    assert tables.title == "homework-195: the class at a glance"
    assert "6 submissions · mean score 8.5 · median 9 · out of 16" in page
    rates = {row[0]: row[1:] for row in tables.tables["checks"][1:]}
    assert rates["experiment"] == ["1", "5 / 6", "83 %"]
    assert rates["runs"] == ["2", "4 / 6", "67 %"]
    assert rates["best_is_production"] == ["3", "2 / 6", "33 %"]
    assert rates["metrics_honest"] == ["0", "2 / 6", "33 %"]
    statuses = {row[0]: (row[1], row[2]) for row in tables.tables["statuses"][1:]}
    assert {status: count for status, (_, count) in statuses.items()} == {
        "graded": "3", "error": "1", "timeout": "1", "missing_notebook": "1"
    }  # fmt: skip
    assert statuses["missing_notebook"][0] == "no notebook was found in the submission"
    assert "NOT ISOLATED: 1 of 6 submissions ran without the sandbox" in page


def test_the_histogram_has_a_bar_per_score_with_its_count(tmp_path):
    bars = class_report.histogram([16, 13, 16, 5, 1, 0], 16)
    assert [bar.label for bar in bars] == [str(score) for score in range(17)]
    assert {bar.label: bar.count for bar in bars if bar.count} == {"0": 1, "1": 1, "5": 1, "13": 1, "16": 2}
    assert max(bar.height for bar in bars) == 100 and bars[0].height == 50
    page, _ = index(tmp_path)
    assert page.count('class="column"') == 17 and 'title="2 students scored 16"' in page


def test_a_large_maximum_groups_scores_into_at_most_twenty_bars():
    scores = list(range(0, 101, 3))
    bars = class_report.histogram(scores, 100)
    assert len(bars) <= class_report.MOST_BARS and sum(bar.count for bar in bars) == len(scores)
    assert bars[0].label == "0–5" and bars[-1].high == 100
    assert all(bar.low <= score <= bar.high for bar in bars for score in scores if bar.low <= score <= bar.high)


def test_flagged_submissions_are_listed_with_what_each_flag_means(tmp_path):
    _, tables = index(tmp_path)
    flagged = tables.tables["flagged"][1:]
    assert [row[-2:] for row in flagged] == [
        ["metrics_honest", "a metric the notebook logged disagrees with the grader's re-scoring of the same model"],
        ["duplicate_models", "several runs logged models that predict exactly alike: one model under several names"],
        ["not_isolated", "the notebook ran without the sandbox"],
    ]
    assert flagged[0][0] == HOSTILE and flagged[1][0] == "=1+1"


def test_hostile_names_are_text_and_every_link_is_a_percent_encoded_relative_path(tmp_path):
    page, tables = index(tmp_path)
    assert HOSTILE not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    students = [row[0] for row in tables.tables["students"][1:]]
    assert students == [HOSTILE, "=1+1", "José Ñúñez", "ana", "bad\\udcff", "nobody"]  # by name, as in the gradebook
    assert "%3Cimg%20src%3Dx%20onerror%3D%22alert%281%29%22%3E/feedback.html" in tables.links
    assert "bad%FF/feedback.html" in tables.links and "Jos%C3%A9%20%C3%91%C3%BA%C3%B1ez/feedback.html" in tables.links
    assert tables.links[-1] == "gradebook.csv"
    for link in tables.links[:-1]:
        assert not link.startswith(("/", "javascript:", "http")) and link.endswith("/feedback.html")
    nobody = next(row for row in tables.tables["students"] if row[0] == "nobody")
    assert nobody[-1] == "no page"  # no feedback folder: no dead link
    assert (tmp_path / "bad\udcff" / "feedback.html").is_file()


def test_the_page_in_spanish(tmp_path):
    page, tables = index(tmp_path, language="es")
    assert '<html lang="es">' in page and tables.title == "homework-195: la clase de un vistazo"
    assert "6 entregas · nota media 8,5 · mediana 9 · sobre 16" in page
    for heading in ("Distribución de las notas", "Cuántos superan cada comprobación", "Entregas con alertas"):
        assert f"<h2>{heading}</h2>" in page
    statuses = {row[0]: row[1] for row in tables.tables["statuses"][1:]}
    assert statuses["missing_notebook"] == "no se encontró ningún notebook en la entrega"
    assert tables.tables["students"][0] == ["Estudiante", "Estado", "Nota", "Alertas", "Retroalimentación"]
    for english in ("Score distribution", "Flagged", "students scored", "feedback</a>"):
        assert english not in page


def test_the_language_follows_the_results(tmp_path):
    results = the_class()
    for graded in results:
        graded.language = "es"  # what the checks helper's Result carries (--lang, or the rubric's language)
    page, _ = index(tmp_path, results)
    assert '<html lang="es">' in page


def test_a_page_that_cannot_be_drawn_says_so_and_the_batch_goes_on(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug in the template")

    monkeypatch.setattr(class_report, "render", broken)
    page = class_report.write_index(the_class(), RUBRIC, tmp_path).read_text()
    assert "could not be drawn (ValueError)" in page and "gradebook.csv is complete" in page
    assert not list(tmp_path.glob(".index-*"))


def test_the_batch_writes_the_page_as_results_arrive_and_an_interrupted_one_leaves_it_whole(tmp_path, monkeypatch):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for name in ("ana", "ben", "cai", "dee"):
        (submissions / f"{name}.ipynb").write_text("{}")
    graded = []

    def fake_grade(path, rubric, out, **options):
        if len(graded) == 2 and options["student"] == "cai":
            raise KeyboardInterrupt
        graded.append(options["student"])
        return Result(options["student"], "graded", 3, rubric.max_score, flags=["metrics_honest"])

    monkeypatch.setattr(batch, "grade_submission", fake_grade)
    with pytest.raises(KeyboardInterrupt):
        cli.grade_folder(submissions, RUBRIC, tmp_path / "out", jobs=1)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "2 submissions" in page and "Grading in progress: 2 submissions still to come" in page
    assert [row[0] for row in Tables(page).tables["students"][1:]] == ["ana", "ben"]
    assert not list((tmp_path / "out").glob(".index-*")), "no partial file left beside it"

    graded.append("cai")  # the next batch is not interrupted
    cli.grade_folder(submissions, RUBRIC, tmp_path / "out", jobs=2)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "4 submissions" in page and "Grading in progress" not in page


def test_a_submission_named_like_the_page_cannot_overwrite_it():
    assert report.INDEX in report.RESERVED_NAMES


@needs_chromium
def test_chromium_renders_the_page(tmp_path):
    index(tmp_path)
    url = (tmp_path / "index.html").as_uri()
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    rendered = Tables(dom)
    assert rendered.title == "homework-195: the class at a glance"
    assert rendered.tables["checks"][1][:3] == ["experiment", "1", "5 / 6"]
    assert "<img" not in dom and '&lt;img src=x onerror="alert(1)"&gt;' in dom  # the name stayed text, no element
    shot = tmp_path / "index.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,1600", url], capture_output=True,
                   timeout=180, check=True)  # fmt: skip
    from PIL import Image

    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "a blank or nearly blank page"
    bar_blue = sum(count for count, colour in colours if colour == (0x4C, 0x78, 0xA8))
    assert bar_blue > 1000, "the histogram's bars are drawn"
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "class-report.png")


@pytest.mark.slow
def test_a_real_batch_writes_the_page(tmp_path):
    submissions = tmp_path / "submissions"
    tiny_notebook(submissions / "tiny.ipynb")
    (submissions / "not-json.ipynb").write_text("this is not a notebook")
    (submissions / "empty").mkdir()
    cli.grade_folder(submissions, RUBRIC, tmp_path / "out", jobs=1)
    tables = Tables((tmp_path / "out" / "index.html").read_text())
    students = {row[0]: row[1:] for row in tables.tables["students"][1:]}
    assert {name: row[0] for name, row in students.items()} == {
        "empty": "missing_notebook", "not-json": "invalid_notebook", "tiny": "graded"
    }  # fmt: skip
    assert students["tiny"][1] == "3 / 16"
    # (flagged students are linked twice: a grader without the sandbox flags every one not_isolated)
    assert set(tables.links) == {"empty/feedback.html", "gradebook.csv", "not-json/feedback.html", "tiny/feedback.html"}
    rates = {row[0]: row[2] for row in tables.tables["checks"][1:]}
    assert rates["experiment"] == "1 / 3" and rates["run_fields"] == "1 / 3" and rates["runs"] == "0 / 3"
