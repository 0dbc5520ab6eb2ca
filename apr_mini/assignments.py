"""Course assignments with nbgrader: student versions, frozen answers, the student course, grading.

The solution notebooks live in ``assignments/source/<id>/<id>.ipynb``, marked the nbgrader way:
``### BEGIN SOLUTION`` / ``### END SOLUTION`` around what students write, locked test cells with the
visible tests, and one written answer cell per assignment (graded by hand). ``assignments/README.md``
says why nbgrader rather than otter-grader, and how an instructor keeps the answers private.

- :func:`generate`: ``nbgrader generate_assignment`` for each assignment, into ``assignments/release/``
  (the student versions: solutions replaced by a stub that raises ``NotImplementedError``);
- :func:`freeze`: the reference's answers on each part's cases, drawn from a (secret) seed, into
  ``assignments/answers/`` (:mod:`apr_mini.grading_cases` holds the questions);
- :func:`export`: the student-facing course (student versions, package, data; no solution or answer);
- :func:`grade`: a folder of submissions (``<folder>/<student>/<assignment id>.ipynb``): every part
  scored by :mod:`apr_mini.grading` in a sealed process against the frozen answers, nbgrader's
  ``autograde`` run in sealed kernels for the written answers, and ``nbgrader export`` for the table.

Run:  python -m apr_mini assignments generate      (make assignments)
      python -m apr_mini assignments freeze [--seed N]
      python -m apr_mini assignments export DEST [--course-url URL]
      python -m apr_mini assignments grade SUBMISSIONS [--out scores.csv]
"""

from __future__ import annotations

import csv
import json
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


def _nbgrader(course: Path, *args: str, env: dict | None = None) -> None:
    """Run an nbgrader command in ``course`` (its nbgrader_config.py applies); raise with its output if it fails."""
    bin_dir = str(Path(sys.executable).parent)  # nbgrader's database tools (alembic) live beside this Python
    # the scratch course is outside the clone: the notebooks' setup cell finds it through APR_MINI_HOME
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "APR_MINI_HOME": str(ROOT.parent),
           **(env or {})}
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


def answers_path(assignment: str, root: Path = ROOT) -> Path:
    return root / "answers" / f"{assignment}.json"


def freeze(root: Path = ROOT, seed: int | None = None) -> list[Path]:
    """Compute every assignment's answers from the reference with ``seed`` (default: a new secret one)
    and store them in ``assignments/answers/`` (never exported); return the files written."""
    import secrets

    from .grading import frozen_answers

    seed = secrets.randbelow(2**31) if seed is None else seed
    written = []
    for assignment in assignment_ids(root):
        path = answers_path(assignment, root)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(frozen_answers(assignment, seed), indent=0) + "\n")
        written.append(path)
    return written


def _load_answers(assignment: str, root: Path) -> dict:
    path = answers_path(assignment, root)
    if not path.is_file():
        raise UserFacingError(f"no frozen answers for {assignment}: run `python -m apr_mini assignments freeze`")
    return json.loads(path.read_text())


def _graded_cells(notebook: dict) -> dict[str, float]:
    """grade_id -> points of each autograded test cell."""
    cells = (c.get("metadata", {}).get("nbgrader", {}) for c in notebook["cells"] if c["cell_type"] == "code")
    return {m["grade_id"]: float(m.get("points", 0)) for m in cells if m.get("grade")}


KERNEL_SEAL = """# apr-mini's grader: this kernel runs one submission (its folder: autograded/<student>/<assignment>)
# on that submission's read-only copy of the package, and may write only in its own folder
import os, sys, tempfile
here = os.getcwd()
student, assignment = os.path.basename(os.path.dirname(here)), os.path.basename(here)
copy = os.path.join({copies!r}, student, assignment)
os.environ["APR_MINI_HOME"] = copy
sys.path.insert(0, copy)
os.environ["TMPDIR"] = tempfile.tempdir = os.path.join(copy, "work")
import torch  # loaded before the seal: its import uses ctypes
from apr_mini.grading import seal
seal(writable=[here, tempfile.tempdir], hidden={hidden!r}, strict=False)
"""


def grade(submissions: str | Path, root: Path = ROOT, out: str | Path | None = None) -> list[dict]:
    """Grade ``submissions/<student>/<assignment id>.ipynb`` (any number of students and
    assignments); return one row per student and assignment with its score, and write them as CSV
    to ``out`` (default ``submissions/scores.csv``).

    Every graded part is scored by :mod:`apr_mini.grading` (a sealed process on a read-only scratch
    copy per submission, against the frozen answers); nbgrader's ``autograde`` still runs each
    notebook, in a kernel that can write only in its own folder, so that the written answers reach
    nbgrader's manual grading, and its scores for the test cells are replaced by the grader's."""
    from nbgrader.api import Gradebook

    from .grading import grade_part, make_scratch

    submissions = Path(submissions)
    if not submissions.is_dir():
        raise UserFacingError(f"{submissions} is not a folder of submissions (<student>/<assignment>.ipynb)")
    known = set(assignment_ids(root))
    found = [(student.name, notebook) for student in sorted(submissions.iterdir()) if student.is_dir()
             for notebook in sorted(student.glob("*.ipynb")) if notebook.stem in known]
    if not found:
        raise UserFacingError(f"no submissions in {submissions}: expected <student>/<one of {sorted(known)}>.ipynb")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        # everything a submission could reach is read or copied before any submission runs
        answers = {a: _load_answers(a, root) for a in sorted({n.stem for _, n in found})}
        sources = {a: json.loads((root / "source" / a / f"{a}.ipynb").read_text()) for a in answers}
        course = _course(root, scratch)
        # the answers, the solutions, the package's source (a copy of it would run unrecognised) and the
        # other submissions; Python and its libraries stay readable
        hidden = [str(p.resolve()) for p in (root, Path(__file__).resolve().parent, root.parent / "tests",
                                             course / "source", course / "submitted", course / "gradebook.db",
                                             submissions)]
        copies = {}
        for student, notebook in found:
            copies[student, notebook.stem] = make_scratch(scratch / "copies" / student / notebook.stem, root.parent)
            target = course / "submitted" / student / notebook.stem
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(notebook, target / notebook.name)
        startup = scratch / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-seal.py").write_text(KERNEL_SEAL.format(copies=str(scratch / "copies"), hidden=hidden))
        for assignment in sorted(answers):
            _nbgrader(course, "autograde", assignment, "--create", "--force", env={"IPYTHONDIR": str(scratch / "ipython")})
        parts = {}
        for student, notebook in found:
            assignment = notebook.stem
            submitted = json.loads(notebook.read_text())
            for grade_id, points in _graded_cells(sources[assignment]).items():
                passed, why = grade_part(submitted, sources[assignment], assignment, grade_id, answers[assignment],
                                         copies[student, assignment], hidden)
                parts[student, assignment, grade_id] = (points if passed else 0.0, why)
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            for (student, assignment, grade_id), (score, _) in parts.items():
                gradebook.find_grade(grade_id, assignment, assignment, student).auto_score = score
            gradebook.db.commit()
        _nbgrader(course, "export", "--to", str(course / "grades.csv"))
        with open(course / "grades.csv") as f:
            rows = [{"student": r["student_id"], "assignment": r["assignment"], "score": float(r["score"]),
                     "max_score": float(r["max_score"])} for r in csv.DictReader(f)
                    if (r["student_id"], r["assignment"]) in {(s, n.stem) for s, n in found}]
    for row in rows:
        row["notes"] = "; ".join(f"{g}: {why}" for (s, a, g), (_, why) in sorted(parts.items())
                                 if (s, a) == (row["student"], row["assignment"]) and why)
    out = Path(out or submissions / "scores.csv")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", "assignment", "score", "max_score", "notes"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


EXPORT_ITEMS = ("apr_mini", "pyproject.toml", "environment.yml", "LICENSE", "tests/fixtures", "data/tiny-apr",
                "data/tiny-sosp")

COURSE_README = """# apr-mini: the course

Five graded notebooks on *Learning Adaptive Parallel Reasoning with Language Models* (APR), with the
`apr_mini` package they use. Open each on Colab (the link below) or in JupyterLab on a clone of this
repository; every one runs on a free CPU runtime in seconds.

{links}

Each part has visible tests to run as you go. Your instructor grades the same questions again on cases
drawn from a seed only they hold, in a fresh process where apr-mini's own implementation of what you
write is switched off, plus one short written question per assignment graded by hand. Submit the
notebook file itself (`<assignment>.ipynb`).
"""


def export(dest: str | Path, root: Path = ROOT, course_url: str | None = None) -> list[Path]:
    """Write the student-facing course to ``dest``: the student versions (``assignments/<id>/<id>.ipynb``),
    the package and the data they use, a README with their Colab links. No solution notebook, answer
    file or hidden test goes there. Returns the notebooks written."""
    from . import colab
    from .grading import copy_items

    dest, repo = Path(dest), root.parent
    course_url = course_url or colab.COURSE_URL
    if dest.exists() and any(dest.iterdir()):
        raise UserFacingError(f"{dest} is not empty: export into a new folder (or the emptied course repository)")
    copy_items(repo, EXPORT_ITEMS, dest)
    notebooks = []
    for notebook in sorted((root / "release").glob("*/*.ipynb")):
        target = dest / "assignments" / notebook.parent.name / notebook.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(notebook, target)
        notebooks.append(target)
    colab.sync_setup_cells(notebooks, course_url=course_url)
    links = "\n".join(f"- [{p.stem}]({colab.course_link(p, course_url)})" for p in notebooks)
    (dest / "README.md").write_text(COURSE_README.format(links=links))
    return notebooks


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
