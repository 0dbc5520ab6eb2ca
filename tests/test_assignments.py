"""The course assignments under nbgrader: the student versions are up to date and hold no solution,
the solutions score full marks, the stubs score zero, and a deliberately wrong implementation of each
exercise is caught by the hidden tests."""

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
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]


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
        solution = notebook(root / "source" / path.parent.name / path.name)
        for mine, theirs in zip(graded_solution_cells(solution), graded_solution_cells(student)):
            body = mine.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
            assert "raise NotImplementedError" in theirs.source
            solved = [line.strip() for line in body.splitlines() if len(line.strip()) > 12]
            assert not any(line in theirs.source for line in solved), "solution code left in the student version"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    submissions = tmp_path_factory.mktemp("submissions")
    for student in ("solution", "stub", "wrong"):
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
    rows = assignments.grade(submissions)
    return {(r["student"], r["assignment"]): r for r in rows}, submissions


def test_solutions_score_full_marks_and_stubs_score_zero(graded):
    scores, submissions = graded
    for assignment in assignments.assignment_ids():
        full = scores[("solution", assignment)]
        assert full["score"] == full["max_score"] > 0, assignment
        assert scores[("stub", assignment)]["score"] == 0, assignment
    assert (submissions / "scores.csv").read_text().startswith("student,assignment,score,max_score")


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
