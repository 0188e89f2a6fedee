"""What grading one submission produces: the record every stage adds to and the report writes out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Check:
    id: str
    passed: bool
    points: int
    max_points: int
    message: str
    expected: str = ""  # for the feedback: what passes, in the student's terms
    hint: str = ""  # for the feedback: what to do about it, from the rubric


@dataclass
class Result:
    student: str
    # graded, error (a cell raised), timeout, kernel_died, invalid_notebook, missing_notebook, unsafe_archive, too_large
    status: str
    score: int = 0
    max_score: int = 0
    message: str = ""
    checks: list[Check] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    sandbox: dict = field(default_factory=dict)
    # Facts the feedback shows (runs ranked, Production version); not part of the result's JSON contract.
    details: dict = field(default_factory=dict, repr=False)
    # The language of the checks' messages and hints ("en", "es"), for the report to match; not in the JSON either.
    language: str = "en"
    # What the kernel and its sandbox printed outside the cells, kept (as kernel.log) when the run did not end well.
    kernel_log: str = field(default="", repr=False)

    def points(self, check_id: str) -> int:
        return next((check.points for check in self.checks if check.id == check_id), 0)

    @classmethod
    def from_json(cls, data: dict) -> Result:
        """The Result that ``to_json`` wrote (without the feedback's details, which result.json does not keep)."""
        return cls(**{**data, "checks": [Check(**check) for check in data["checks"]]})

    def to_json(self) -> dict:
        data = asdict(self)
        del data["details"], data["language"], data["kernel_log"]
        for check in data["checks"]:
            del check["expected"], check["hint"]
        return data
