"""gradebook.csv as an LMS imports it: one row per student, stable columns, numbers as numbers, UTF-8 without BOM,
RFC 4180 line ends, names that neither break a row nor run as a spreadsheet formula."""

from __future__ import annotations

import csv
import io

from grader import report
from tests.reports import CHECK_IDS, HOSTILE, RUBRIC, UNDECODABLE, the_class

COLUMNS = ["student", "status", "score", "max_score", *CHECK_IDS, "flags"]
QUOTED = 'José "Pepe" Ñúñez, 2º'  # quotes, a comma and accents in one name
# How each name is written: a formula gets a leading quote, undecodable bytes an escape.
SHOWN = {HOSTILE: HOSTILE, "=1+1": "'=1+1", QUOTED: QUOTED, "ana": "ana", UNDECODABLE: "bad\\udcff", "nobody": "nobody"}


def test_the_gradebook_imports_as_is(tmp_path):
    results = the_class()
    results[1].student = QUOTED
    data = report.write_gradebook(results, tmp_path).read_bytes()
    assert data.startswith(b"student,status,score,max_score,")  # no byte-order mark
    assert data.count(b"\r\n") == len(results) + 1 and b"\n" not in data.replace(b"\r\n", b"")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert list(rows[0]) == COLUMNS
    assert [row["student"] for row in rows] == [SHOWN[name] for name in sorted(SHOWN)]  # one row each, by name
    by_name = {row["student"]: row for row in rows}
    for graded in results:
        row = by_name[SHOWN[graded.student]]
        assert (row["status"], int(row["score"]), int(row["max_score"])) == (graded.status, graded.score, 16)
        assert sum(int(row[check]) for check in CHECK_IDS) == graded.score
        assert row["flags"].split() == graded.flags
    assert by_name["'=1+1"]["flags"] == "duplicate_models not_isolated"


def test_the_columns_are_the_rubrics_checks_whatever_the_rows(tmp_path):
    for count in (1, 6):
        header = report.write_gradebook(the_class()[:count], tmp_path).read_text().splitlines()[0]
        assert header.split(",") == COLUMNS
    assert RUBRIC.max_score == 16
