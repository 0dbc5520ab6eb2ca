"""Course assignments with nbgrader: student versions from the solution notebooks, and grading.

The solution notebooks live in ``assignments/source/<id>/<id>.ipynb``, marked the nbgrader way:
``### BEGIN SOLUTION`` / ``### END SOLUTION`` around what students write, graded test cells with
their visible tests and ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` around the hidden ones
(``assignments/README.md`` says why nbgrader rather than otter-grader). This module only arranges
files and calls nbgrader's own commands:

- :func:`generate`: ``nbgrader generate_assignment`` for each assignment, into ``assignments/release/``
  (the student versions: solutions replaced by a stub that raises ``NotImplementedError``, hidden
  tests removed);
- :func:`grade`: copies a folder of submissions (``<folder>/<student>/<assignment id>.ipynb``) into a
  scratch course, runs ``nbgrader autograde`` (each notebook top to bottom, hidden tests put back) and
  ``nbgrader export``, and returns the score table (also written as CSV).

Run:  python -m apr_mini assignments generate      (make assignments)
      python -m apr_mini assignments grade SUBMISSIONS [--out scores.csv]
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .config import UserFacingError

ROOT = Path(__file__).resolve().parent.parent / "assignments"


def assignment_ids(root: Path = ROOT) -> list[str]:
    return sorted(p.name for p in (root / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())


def _nbgrader(course: Path, *args: str) -> None:
    """Run an nbgrader command in ``course`` (its nbgrader_config.py applies); raise with its output if it fails."""
    bin_dir = str(Path(sys.executable).parent)  # nbgrader's database tools (alembic) live beside this Python
    # the scratch course is outside the clone: the notebooks' setup cell finds it through APR_MINI_HOME
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "APR_MINI_HOME": str(ROOT.parent)}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--db=sqlite:///{course / 'gradebook.db'}"],
                          cwd=course, env=env, capture_output=True, text=True)
    if done.returncode or "| ERROR]" in done.stdout + done.stderr:
        raise UserFacingError(f"nbgrader {args[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")


def _course(root: Path, scratch: Path) -> Path:
    """A scratch nbgrader course holding the solution notebooks and a fresh gradebook."""
    course = scratch / "course"
    shutil.copytree(root / "source", course / "source")
    shutil.copy(root / "nbgrader_config.py", course / "nbgrader_config.py")
    for assignment in assignment_ids(root):
        _nbgrader(course, "db", "assignment", "add", assignment)
        _nbgrader(course, "generate_assignment", assignment, "--force")
    return course


def generate(root: Path = ROOT) -> list[Path]:
    """Write the student version of every assignment to ``root/release``; return their paths."""
    with tempfile.TemporaryDirectory() as scratch:
        course = _course(root, Path(scratch))
        shutil.rmtree(root / "release", ignore_errors=True)
        shutil.copytree(course / "release", root / "release")
    return sorted((root / "release").glob("*/*.ipynb"))


def grade(submissions: str | Path, root: Path = ROOT, out: str | Path | None = None) -> list[dict]:
    """Autograde ``submissions/<student>/<assignment id>.ipynb`` (any number of students and
    assignments); return one row per student and assignment with its score, and write them as CSV
    to ``out`` (default ``submissions/scores.csv``)."""
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise UserFacingError(f"{submissions} is not a folder of submissions (<student>/<assignment>.ipynb)")
    known = set(assignment_ids(root))
    found = [(student.name, notebook) for student in sorted(submissions.iterdir()) if student.is_dir()
             for notebook in sorted(student.glob("*.ipynb")) if notebook.stem in known]
    if not found:
        raise UserFacingError(f"no submissions in {submissions}: expected <student>/<one of {sorted(known)}>.ipynb")
    with tempfile.TemporaryDirectory() as scratch:
        course = _course(root, Path(scratch))
        for student, notebook in found:
            target = course / "submitted" / student / notebook.stem
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(notebook, target / notebook.name)
        for assignment in sorted({notebook.stem for _, notebook in found}):
            _nbgrader(course, "autograde", assignment, "--create", "--force")
        _nbgrader(course, "export", "--to", str(course / "grades.csv"))
        with open(course / "grades.csv") as f:
            rows = [{"student": r["student_id"], "assignment": r["assignment"], "score": float(r["score"]),
                     "max_score": float(r["max_score"])} for r in csv.DictReader(f)
                    if (r["student_id"], r["assignment"]) in {(s, n.stem) for s, n in found}]
    out = Path(out or submissions / "scores.csv")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", "assignment", "score", "max_score"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def score_table(rows: list[dict]) -> str:
    """A Markdown table: one row per student, one column per assignment, and the total."""
    assignments = sorted({r["assignment"] for r in rows})
    students = sorted({r["student"] for r in rows})
    score = {(r["student"], r["assignment"]): r for r in rows}
    lines = ["| student | " + " | ".join(assignments) + " | total |", "|---" * (len(assignments) + 2) + "|"]
    for student in students:
        cells = [score.get((student, a)) for a in assignments]
        total = sum(c["score"] for c in cells if c), sum(c["max_score"] for c in cells if c)
        lines.append(f"| {student} | " + " | ".join(f"{c['score']:g}/{c['max_score']:g}" if c else "-" for c in cells)
                     + f" | {total[0]:g}/{total[1]:g} |")
    return "\n".join(lines)
