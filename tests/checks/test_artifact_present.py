"""artifact_present on real run folders: a report, an empty placeholder, a link to a file elsewhere."""

from tests.checks.conftest import EXPERIMENT, graded, rubric_with


def test_a_real_report_passes_and_placeholders_or_links_fail(store, tmp_path):
    report = store.run("report")
    store.artifact(report, "drift/report.html", b"<html><td>p_holm</td>" + b" " * 200 + b"</html>")
    empty = store.run("empty")
    store.artifact(empty, "drift/report.html", b"")
    wrong = store.run("placeholder")
    store.artifact(wrong, "drift/report.html", b"x" * 500)
    linked = store.run("linked")
    outside = tmp_path / "elsewhere.html"
    outside.write_bytes(b"p_holm" * 100)
    (store.artifact(linked, "drift/keep", b"").parent / "report.html").symlink_to(outside)
    base = {"kind": "artifact_present", "experiment": EXPERIMENT, "path": "drift/*.html"}
    rubric = rubric_with(
        tmp_path,
        {**base, "id": "any_report", "on": "any_run", "contains": "p_holm", "min_bytes": 100},
        {**base, "id": "every_report", "contains": "p_holm"},
        {**base, "id": "every_file", "path": "drift/*", "min_bytes": 0},
    )
    checks = graded(store.read(rubric), rubric)
    assert checks["any_report"].passed, checks["any_report"].message
    every = checks["every_report"]
    assert not every.passed and "3 of 4 runs have no fitting artifact" in every.message
    assert "'drift/report.html' has only 0 bytes" in every.message
    assert "'drift/report.html' does not contain 'p_holm'" in every.message
    assert "no artifact matches; it has 'drift/keep'" in every.message  # the link is not listed
    assert checks["every_file"].passed


def test_listing_is_bounded_per_submission(store, tmp_path, monkeypatch):
    from grader import inspect

    for name in ("first", "second"):
        run_id = store.run(name)
        for index in range(3):
            store.artifact(run_id, f"file-{index}.txt", b"data")
    monkeypatch.setattr(inspect, "MAX_LISTED_ARTIFACTS", 3)
    rubric = rubric_with(tmp_path, {"kind": "artifact_present", "experiment": EXPERIMENT, "path": "*.txt"})
    check = graded(store.read(rubric), rubric)["artifact_present"]
    assert not check.passed and "1 of 2 runs" in check.message and "more than 3 artifacts in all" in check.message
