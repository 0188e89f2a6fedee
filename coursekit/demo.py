"""``make demo``: grade the sample submissions in homework/examples/ into gradebook/ and print the gradebook."""

from __future__ import annotations

import sys
from pathlib import Path

from grader.__main__ import main as grader_main

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    out = REPO / "gradebook"
    status = grader_main(
        [
            "grade",
            str(REPO / "homework" / "examples"),
            "--rubric",
            str(REPO / "homework" / "homework-195.rubric.toml"),
            "--out",
            str(out),
            "--jobs",
            "2",
            # The rubric allows 300 s per notebook; the samples need far less, and one of them never ends.
            "--timeout",
            "90",
        ]
    )
    if status == 0:
        print((out / "gradebook.csv").read_text(), end="")
        print(f"Feedback for each student: {out}/NAME/feedback.html")
    return status


if __name__ == "__main__":
    sys.exit(main())
