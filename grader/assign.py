"""Generate a homework's student notebook and reference solution from one source notebook.

The source (``homework/src/NAME.ipynb``) marks solution code nbgrader-style::

    ### BEGIN SOLUTION
    ...code only the reference solution has...
    ### END SOLUTION

``python -m grader.assign homework/src/NAME.ipynb`` writes ``homework/NAME.ipynb`` (each marked block replaced
by a placeholder that raises) and ``homework/solution/NAME.ipynb`` (markers removed), both without outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")


class MarkerError(ValueError):
    """The source notebook's solution markers are unbalanced."""


def _split_solution(source: str, cell_index: int, keep_solution: bool) -> str:
    lines, inside = [], False
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        where = f"cell {cell_index}, line {number}"
        if marker == BEGIN:
            if inside:
                raise MarkerError(f"{where}: '{BEGIN}' inside another solution block")
            inside = True
            if not keep_solution:
                indent = line[: len(line) - len(line.lstrip())]
                lines.extend(indent + text for text in PLACEHOLDER)
        elif marker == END:
            if not inside:
                raise MarkerError(f"{where}: '{END}' without '{BEGIN}'")
            inside = False
        elif keep_solution or not inside:
            lines.append(line)
    if inside:
        raise MarkerError(f"cell {cell_index}: '{BEGIN}' is never closed")
    return "\n".join(lines).strip("\n")  # a block at either end must not leave blank lines behind


def render(source_notebook: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """The (student, solution) notebooks for a source notebook, outputs stripped."""
    versions = []
    for keep_solution in (False, True):
        notebook = nbformat.from_dict(source_notebook)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            cell.source = _split_solution(cell.source, index, keep_solution)
            cell.outputs = []
            cell.execution_count = None
        versions.append(notebook)
    return versions[0], versions[1]


def targets(source_path: Path) -> tuple[Path, Path]:
    """Where the student notebook and the solution go: beside and below the source's parent folder."""
    homework_dir = source_path.resolve().parent.parent
    return homework_dir / source_path.name, homework_dir / "solution" / source_path.name


def generate(source_path: Path) -> tuple[Path, Path]:
    student_path, solution_path = targets(source_path)
    student, solution = render(nbformat.read(source_path, as_version=4))
    for notebook, path in ((student, student_path), (solution, solution_path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, path)
    return student_path, solution_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a homework's student notebook and reference solution.")
    parser.add_argument("source", type=Path, help="the source notebook, e.g. homework/src/homework-195.ipynb")
    args = parser.parse_args(argv)
    try:
        for path in generate(args.source):
            print(f"wrote {path}")
    except (OSError, MarkerError, nbformat.reader.NotJSONError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
