"""The course assignments under nbgrader: the student versions are up to date and hold no solution,
the solutions score every automatic point, the stubs score zero, a deliberately wrong implementation of
each exercise is caught by its visible tests and by the grader, a submission that writes into the
package changes no one's score, and the student-facing export holds no solution or answer.
(apr_mini.grading's own tests, test_grading.py, try every cheat.)"""

import shutil

import nbformat
import pytest

from apr_mini import assignments

# one plausible mistake per exercise: (text in the solution, what a student might write instead)
WRONG = {
    "a1_verifier": ("        left.remove(operand)", "        pass  # lenient, like the reference's checker"),
    "a2_spawn_join": ("enumerate(zip(nodes, results)):", "enumerate(zip(nodes, results), start=1):  # off by one"),
    "a4_orchestrator": ("        if parent.waiting_for:\n", "        if parent.waiting_for > 1:  # joins one child too early\n"),
    "a5_grpo": ("torch.clamp(ratio, 1 - epsilon, 1 + epsilon)", "torch.clamp(ratio, 1 - epsilon, 1 + 2 * epsilon)"),
    "a3_tree_metrics": ("counts.append(tl.count_tokens(calls[k][len(before):]))",
                        "counts.append(tl.count_tokens(calls[k]))  # counts the repeated prefix again"),
}


def notebook(path):
    return nbformat.read(path, as_version=4)


def graded_solution_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]


def test_every_assignment_has_a_wrong_implementation_to_catch():
    assert set(WRONG) == set(assignments.assignment_ids())


def test_student_versions_are_up_to_date_and_hold_no_solution(tmp_path):
    root = tmp_path / "assignments"
    shutil.copytree(assignments.ROOT / "source", root / "source")
    shutil.copy(assignments.ROOT / "nbgrader_config.py", root)
    generated = assignments.generate(root)
    assert [p.relative_to(root) for p in generated] == sorted(
        p.relative_to(assignments.ROOT) for p in (assignments.ROOT / "release").glob("*/*.ipynb"))
    for path in generated:
        student = notebook(path)
        committed = notebook(assignments.ROOT / path.relative_to(root))
        assert [c.source for c in student.cells] == [c.source for c in committed.cells], f"run `make assignments`: {path.name}"
        text = "\n".join(c.source for c in student.cells)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
        written = [c for c in student.cells if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution")]
        assert [c.source for c in written] == ["YOUR ANSWER HERE"], f"{path.name}: the written answer is not blank"
        solution = notebook(root / "source" / path.parent.name / path.name)
        for mine, theirs in zip(graded_solution_cells(solution), graded_solution_cells(student)):
            body = mine.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
            assert "raise NotImplementedError" in theirs.source
            solved = [line.strip() for line in body.splitlines() if len(line.strip()) > 12]
            assert not any(line in theirs.source for line in solved), "solution code left in the student version"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    submissions = tmp_path_factory.mktemp("submissions")
    for student in ("solution", "stub", "wrong", "writer", "zz-after-writer"):
        (submissions / student).mkdir()
    for assignment in assignments.assignment_ids():
        name = f"{assignment}.ipynb"
        shutil.copy(assignments.ROOT / "source" / assignment / name, submissions / "solution" / name)
        shutil.copy(assignments.ROOT / "release" / assignment / name, submissions / "stub" / name)
        wrong = notebook(assignments.ROOT / "source" / assignment / name)
        right, mistake = WRONG[assignment]
        assert sum(right in c.source for c in wrong.cells) == 1, assignment
        for cell in wrong.cells:
            cell.source = cell.source.replace(right, mistake)
        nbformat.write(wrong, submissions / "wrong" / name)
        # a kernel that tries to plant code in the package and the clone, then solves honestly
        writer = notebook(assignments.ROOT / "source" / assignment / name)
        writer.cells.insert(3, nbformat.v4.new_code_cell(PLANT))
        nbformat.write(writer, submissions / "writer" / name)
        shutil.copy(assignments.ROOT / "source" / assignment / name, submissions / "zz-after-writer" / name)
    rows = assignments.grade(submissions)
    return {(r["student"], r["assignment"]): r for r in rows}, submissions


PLANT = """import os
for target in (ROOT / "apr_mini" / "trace_language.py", ROOT.parent / "planted.py",
               ROOT / "apr_mini" / "__init__.py"):
    try:
        os.chmod(target, 0o666)
    except Exception:
        pass
    try:
        open(target, "a").write("\\nraise SystemExit('planted')\\n")
    except Exception:
        pass
"""


def written_points(assignment):
    cells = notebook(assignments.ROOT / "source" / assignment / f"{assignment}.ipynb").cells
    return sum(c.metadata["nbgrader"].get("points", 0) for c in cells
               if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade"))


def test_solutions_score_every_automatic_point_and_stubs_score_zero(graded):
    scores, submissions = graded
    for assignment in assignments.assignment_ids():
        full = scores[("solution", assignment)]
        assert written_points(assignment) == 2, assignment  # one written question, graded by hand
        assert full["score"] == full["max_score"] - 2 > 0, assignment
        assert scores[("stub", assignment)]["score"] == 0, assignment
    assert (submissions / "scores.csv").read_text().startswith("student,assignment,score,max_score,notes")


def test_a_submission_that_writes_into_the_package_changes_no_score(graded):
    scores, _ = graded
    for assignment in assignments.assignment_ids():
        assert scores[("writer", assignment)]["score"] == scores[("zz-after-writer", assignment)]["score"] \
            == scores[("solution", assignment)]["score"], assignment
    assert "planted" not in (assignments.ROOT.parent / "apr_mini" / "trace_language.py").read_text()
    assert not (assignments.ROOT.parent.parent / "planted.py").exists()


def failing_visible_tests(nb) -> list[str]:
    """Run a notebook's code cells in order in one namespace; the grade_ids of the test cells that fail."""
    namespace, failing = {"__name__": "__main__"}, []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        try:
            exec(compile(cell.source, meta.get("grade_id", "cell"), "exec"), namespace)  # noqa: S102 - our notebooks
        except Exception:  # noqa: BLE001
            failing.append(meta.get("grade_id", "?"))
    return failing


@pytest.mark.parametrize("assignment", sorted(WRONG))
def test_visible_tests_catch_the_known_mistake(assignment):
    """The deliberate mistake fails a visible test in the student's own run, not only in the grade."""
    path = assignments.ROOT / "source" / assignment / f"{assignment}.ipynb"
    assert failing_visible_tests(notebook(path)) == []
    wrong = notebook(path)
    right, mistake = WRONG[assignment]
    for cell in wrong.cells:
        cell.source = cell.source.replace(right, mistake)
    assert failing_visible_tests(wrong), f"{assignment}: the visible tests pass {mistake.strip()!r}"


def test_the_export_holds_the_student_course_and_no_answers(tmp_path):
    from apr_mini import colab

    written = assignments.export(tmp_path / "course", course_url="https://github.com/teacher/course")
    assert sorted(p.name for p in written) == sorted(f"{a}.ipynb" for a in assignments.assignment_ids())
    every = [p for p in (tmp_path / "course").rglob("*") if p.is_file()]
    assert not any("answers" in p.parts or "source" in p.parts or "release" in p.parts for p in every)
    for path in written:
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "mark scheme" not in text.lower()
        assert 'REPO_URL = \\"https://github.com/teacher/course\\"' in text
        assert colab.course_link(path, "https://github.com/teacher/course") in (tmp_path / "course" / "README.md").read_text()
    assert (tmp_path / "course" / "apr_mini" / "grading.py").is_file()


def test_the_hidden_tests_catch_a_wrong_implementation(graded):
    scores, _ = graded
    for assignment in assignments.assignment_ids():
        assert scores[("wrong", assignment)]["score"] < scores[("solution", assignment)]["score"], assignment


def test_the_grade_command_prints_a_score_table(graded, capsys):
    from apr_mini.__main__ import main

    _, submissions = graded
    only = submissions.parent / "one"
    shutil.copytree(submissions / "solution", only / "ada")
    main(["assignments", "grade", str(only), "--out", str(only / "table.csv")])
    printed = capsys.readouterr().out
    assert "| ada |" in printed and (only / "table.csv").exists()
