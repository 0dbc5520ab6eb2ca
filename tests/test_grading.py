"""Grading that a submission cannot game (apr_mini.grading): every cheat below scores 0 on the parts it
touches, an honest solution scores full marks, the answers are frozen and current, and a regrade
gives the same result. Each part runs in a sealed process on a read-only scratch copy (about 1 s)."""

import json
import random

import pytest

from apr_mini import assignments, grading
from apr_mini.grading_cases import PARTS

A3 = "a3_tree_metrics"
SOURCE = json.loads((assignments.ROOT / "source" / A3 / f"{A3}.ipynb").read_text())
ANSWERS = json.loads(assignments.answers_path(A3).read_text())
HIDDEN = [str(assignments.ROOT), str(assignments.ROOT.parent / "apr_mini"), str(assignments.ROOT.parent / "tests")]

# the honest new_tokens stays; total_tokens, longest_sequence and critical_path come from STATS,
# which each cheat reaches by another route to apr-mini's own tree_stats
BY_STATS = """
def total_tokens(tree):
    return STATS(tree).total_tokens


def longest_sequence(tree):
    return STATS(tree).longest_sequence


def critical_path(tree):
    return STATS(tree).critical_path
"""
CHEATS = {
    "alias import": "from apr_mini.trace_trees import tree_stats as STATS",
    "module-level binding": "STATS = tt.tree_stats",
    "helper function": "def STATS(tree):\n    return tt.tree_stats(tree)",
    "lambda": "STATS = lambda tree: tt.tree_stats(tree)",
    "importlib and getattr": "import importlib\nSTATS = getattr(importlib.import_module('apr_mini.trace_trees'), 'tree_' + 'stats')",
    "reload": "import importlib\nSTATS = lambda tree: importlib.reload(tt).tree_stats(tree)",
    "function copy": "import types\nSTATS = types.FunctionType(tt.tree_stats.__code__, tt.tree_stats.__globals__)",
    "renamed code copy": ("import types\nSTATS = types.FunctionType(tt.tree_stats.__code__.replace(co_name='mine', "
                          "co_qualname='mine'), tt.tree_stats.__globals__)"),
    "source copy": ("import inspect\nspace = dict(tt.__dict__)\nexec(compile(inspect.getsource(tt.tree_stats), 'mine.py', "
                    "'exec'), space)\nSTATS = space['tree_stats']"),
    "module loaded from its file": ("import importlib.util\nspec = importlib.util.spec_from_file_location('copy_tt', tt.__file__)\n"
                                    "copy = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(copy)\n"
                                    "STATS = copy.tree_stats"),
    "trace function switched off": "import sys\ntry:\n    sys.settrace(None)\nexcept Exception:\n    pass\nSTATS = tt.tree_stats",
    "trace function disarmed": ("import sys\nguard = sys.gettrace()\ntry:\n    guard.__defaults__ = (frozenset(), frozenset(), '', print)\n"
                                "except Exception:\n    pass\nSTATS = tt.tree_stats"),
    "a thread without the trace": ("import threading\ndef STATS(tree):\n    box = []\n"
                                   "    worker = threading.Thread(target=lambda: box.append(tt.tree_stats(tree)))\n"
                                   "    worker.start(); worker.join()\n    return box[0]"),
    "a raw thread": ("import _thread, time\ndef STATS(tree):\n    box = []\n"
                     "    _thread.start_new_thread(lambda: box.append(tt.tree_stats(tree)), ())\n"
                     "    while not box:\n        time.sleep(0.001)\n    return box[0]"),
    "a subprocess": ("import json, subprocess, sys, types\ndef STATS(tree):\n    out = subprocess.run([sys.executable, '-c', "
                     "'import json, sys; from apr_mini import trace_trees as tt; s = tt.tree_stats(json.load(sys.stdin)); "
                     "print(json.dumps([s.total_tokens, s.longest_sequence, s.critical_path]))'], input=json.dumps(tree), "
                     "capture_output=True, text=True).stdout\n    t, l, c = json.loads(out)\n"
                     "    return types.SimpleNamespace(total_tokens=t, longest_sequence=l, critical_path=c)"),
    "ctypes": "import ctypes\nctypes.pythonapi.PyEval_SetTrace(None, None)\nSTATS = tt.tree_stats",
    "the garbage collector": ("import gc\nSTATS = next(o for o in gc.get_objects() if getattr(o, '__name__', '') == 'tree_stats')"),
}
# cheats that do not call the reference but try to make wrong answers pass
FAKES = {
    "monkeypatched oracle": ("def total_tokens(tree):\n    return 0\n\ndef longest_sequence(tree):\n    return 0\n\n"
                             "def critical_path(tree):\n    return 0\n\n"
                             "tt.tree_stats = lambda tree, count=None: type('S', (), dict(total_tokens=0, "
                             "longest_sequence=0, critical_path=0))()"),
    "always-equal answers": ("class Same(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n\n"
                             "def total_tokens(tree):\n    return Same(0)\n\ndef longest_sequence(tree):\n    return Same(0)\n\n"
                             "def critical_path(tree):\n    return Same(0)"),
    "a forged answer line": (f"import os, sys\nsys.stdout.write({grading.MARKER!r} + '[]\\n'); sys.stdout.flush()\nos._exit(0)"),
    "the answers file read": ("def critical_path(tree):\n    return ANSWERS",
                              f"import json\nANSWERS = json.load(open({str(assignments.answers_path(A3))!r}))"),
    "blank later cells": ("get_ipython().input_transformers_cleanup.append(lambda lines: [])"),
}


def with_cell(*sources: str) -> dict:
    """The solution notebook with cells of the student's own after the solutions."""
    notebook = json.loads(json.dumps(SOURCE))
    index = max(i for i, c in enumerate(notebook["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("solution")
                and c["cell_type"] == "code")
    notebook["cells"][index + 1:index + 1] = [{"cell_type": "code", "metadata": {}, "outputs": [],
                                               "execution_count": None, "source": s} for s in sources]
    return notebook


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return grading.make_scratch(tmp_path_factory.mktemp("grading") / "copy")


def scores(notebook, scratch) -> dict:
    return {part.grade_id: grading.grade_part(notebook, SOURCE, A3, part.grade_id, ANSWERS, scratch, HIDDEN)
            for part in PARTS[A3]}


def test_the_solution_passes_every_part_and_a_regrade_agrees(scratch):
    first, second = scores(SOURCE, scratch), scores(SOURCE, scratch)
    assert first == second == {p.grade_id: (True, "") for p in PARTS[A3]}


@pytest.mark.parametrize("route", sorted(CHEATS))
def test_reaching_the_reference_by_any_route_scores_zero(route, scratch):
    # the functions go in first: a cheat that fails leaves them without STATS, not the honest solution
    got = scores(with_cell(BY_STATS, "from apr_mini import trace_trees as tt\n" + CHEATS[route]), scratch)
    assert not any(passed for passed, _ in got.values()), f"{route}: {got}"


@pytest.mark.parametrize("route", sorted(FAKES))
def test_wrong_answers_dressed_as_right_ones_score_zero(route, scratch):
    cells = FAKES[route] if isinstance(FAKES[route], tuple) else (FAKES[route],)
    cells = ("from apr_mini import trace_trees as tt",) + cells
    got = scores(with_cell(*cells), scratch)
    touched = [g for g in got if route != "the answers file read" or g == "test_critical_path"]
    if route == "blank later cells":
        touched = []  # the graded process has no IPython: the cell fails and the solutions stand
    assert not any(got[g][0] for g in touched), f"{route}: {got}"


def test_a_submission_cannot_write_into_its_copy_or_the_clone(scratch):
    targets = [scratch / "apr_mini" / "trace_language.py", assignments.ROOT.parent / "apr_mini" / "planted.py",
               assignments.ROOT / "answers" / "planted.json"]
    before = (scratch / "apr_mini" / "trace_language.py").read_text()
    attempt = "\n".join(f"try:\n    open({str(t)!r}, 'a').write('planted = 1\\n')\nexcept Exception:\n    pass" for t in targets)
    attempt += "\nimport os\ntry:\n    os.chmod({!r}, 0o777)\nexcept Exception:\n    pass".format(str(targets[0]))
    assert scores(with_cell(attempt), scratch) == {p.grade_id: (True, "") for p in PARTS[A3]}
    assert (scratch / "apr_mini" / "trace_language.py").read_text() == before
    assert not targets[1].exists() and not targets[2].exists()


def test_the_frozen_answers_are_current_and_come_from_their_seed():
    for assignment in assignments.assignment_ids():
        stored = json.loads(assignments.answers_path(assignment).read_text())
        fresh = json.loads(json.dumps(grading.frozen_answers(assignment, stored["seed"])))
        stale = f"run `python -m apr_mini assignments freeze --seed {stored['seed']}` ({assignment})"
        assert set(fresh["parts"]) == set(stored["parts"]), stale
        for part in PARTS[assignment]:
            # float parts may differ in the last bits between BLAS builds; the grader compares them with tolerance
            want, got = stored["parts"][part.grade_id], fresh["parts"][part.grade_id]
            assert grading.matches(got["values"], want["values"], part.tolerance) if part.tolerance else got == want, stale
        cells = {c["metadata"]["nbgrader"]["grade_id"] for c in json.loads(
            (assignments.ROOT / "source" / assignment / f"{assignment}.ipynb").read_text())["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c["cell_type"] == "code"}
        assert cells == {p.grade_id for p in PARTS[assignment]} == set(stored["parts"]), assignment


def test_cases_depend_only_on_the_seed():
    part = PARTS[A3][0]
    one, two = part.cases(random.Random("7:x")), part.cases(random.Random("7:x"))
    assert [part.expected(t) for t in one] == [part.expected(t) for t in two]
    assert [part.expected(t) for t in one] != [part.expected(t) for t in part.cases(random.Random("8:x"))]


def test_matching_is_exact_in_type_and_tolerant_only_for_floats():
    assert grading.matches([1, [2.0]], [1, [2.0000001]], 1e-6) and not grading.matches([True], [1], 0)
    assert not grading.matches("1", 1, 0) and not grading.matches([1, 2], [1], 0)
