"""Results built by hand for the report tests: a small class with hostile names, every kind of row, and flags."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import nbformat

from grader.result import Check, Result
from grader.rubric import load

REPO = Path(__file__).resolve().parents[1]
RUBRIC = load(REPO / "homework" / "homework-195.rubric.toml")
CHECK_IDS = tuple(RUBRIC.points)  # the rubric's checks, in its order
HOSTILE = '<img src=x onerror="alert(1)">'
UNDECODABLE = b"bad\xff".decode(errors="surrogateescape")


def result(student: str, status: str, passed: set[str], flags: tuple[str, ...] = (), isolated: bool = True) -> Result:
    checks = [
        Check(check, check in passed, RUBRIC.points[check] if check in passed else 0, RUBRIC.points[check],
              f"found what {student} left for {check}", f"what {check} asks", f"hint for {check}")
        for check in CHECK_IDS
    ]  # fmt: skip
    flags = [*flags, *([] if isolated else ["not_isolated"])]
    sandbox = {"isolated": isolated, "description": "bubblewrap" if isolated else "OFF: no bwrap"}
    return Result(student, status, sum(check.points for check in checks), RUBRIC.max_score, "", checks, flags, sandbox)


def the_class() -> list[Result]:
    everything = set(CHECK_IDS)
    return [
        result("ana", "graded", everything),  # 16
        result("José Ñúñez", "graded", everything - {"best_is_production"}),  # 13
        result(HOSTILE, "graded", everything - {"metrics_honest"}, flags=("metrics_honest",)),  # 16
        result("=1+1", "error", {"experiment", "runs", "run_fields"}, flags=("duplicate_models",), isolated=False),
        result(UNDECODABLE, "timeout", {"experiment"}),  # 1
        result("nobody", "missing_notebook", set()),  # 0
    ]


def write_feedback_pages(out: Path, results: list[Result], rubric=RUBRIC) -> None:
    from grader import report

    for graded in results:
        report.write_submission(graded, None, out / graded.student, rubric)


def tiny_notebook(path: Path) -> Path:
    """A submission that logs one run with its fields but no model: two checks pass, the rest fail, quickly."""
    code = (
        "import mlflow\n"
        'mlflow.set_experiment("homework-195")\n'
        "with mlflow.start_run():\n"
        '    mlflow.log_param("model_type", "guess")\n'
        '    mlflow.log_metrics({"rmse_test": 0.5, "r2_test": 0.1})\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), path)
    return path


class Tables(HTMLParser):
    """The text of every table row, by the table's (or a paragraph's) id; the page's title."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.title = ""
        self._table = self._cell = None
        self._in_title = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "a":
            self.links.append(attrs["href"])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data
