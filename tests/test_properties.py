"""Property tests: hostile text never crashes the parser or the verifier, and never runs code."""

import builtins
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apr_mini import trace_language as tl
from apr_mini.countdown import Step, all_solutions, verify_steps

ALPHABET = st.sampled_from(list("0123456789,[]:'+-*/= #\n<>") + tl.PHRASES + ["__import__('os')", "eval(", "9" * 50])
HOSTILE = st.lists(ALPHABET, max_size=80).map("".join)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _no_code(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the trace language must never eval/exec text")
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)


@SETTINGS
@given(text=HOSTILE)
def test_hostile_text_never_crashes_the_parser(text):
    tl.extract_result(text)
    tl.node_table(text)
    pieces = tl.split_tokens(text)
    assert "".join(pieces) == text and tl.count_tokens(text) == len(pieces)
    verdict = tl.verify_trace(text, [1, 2, 3], 6)
    assert isinstance(verdict.reason, str)
    for fn in (tl.child_prompts, tl.parse_spawn, tl.parse_prompt):
        try:
            fn(text)
        except tl.TraceFormatError:
            pass
    try:
        tl.join_text(text, [])
    except ValueError:  # TraceFormatError is a ValueError; so is a wrong number of results
        pass


def test_parser_runs_no_code(monkeypatch):
    _no_code(monkeypatch)
    text = ("Moving to Node #0\nCurrent State: 6:[1, 2, 3], Operations: []\n"
            "Generated Node #0,0: 6:[3, 3] Operation: 1+2=3\n<Calling Sub Searches>\n"
            "<Start Sub Search 0 at level 1> Moving to Node #0,0\n<End Calling Sub Searches>")
    assert tl.child_prompts(text) == ["Moving to Node #0,0\nCurrent State: 6:[3, 3], Operations: ['1+2=3']"]
    evil = text.replace("[1, 2, 3]", "[__import__('os').system('echo pwned')]")
    assert not tl.verify_trace(evil + "\nGoal Reached\nGoal Reached", [1, 2, 3], 6)


small_problem = st.tuples(st.lists(st.integers(1, 15), min_size=3, max_size=4), st.integers(1, 60))


@settings(max_examples=150, deadline=None)
@given(problem=small_problem)
def test_every_solver_solution_verifies(problem):
    nums, target = problem
    for path in all_solutions(nums, target)[:20]:
        assert verify_steps(nums, target, path), path


def _independent_check(nums, target, steps) -> bool:
    """A second, deliberately simple implementation of the rules."""
    pool = list(nums)
    for a, op, b, c in steps:
        if a not in pool:
            return False
        pool.remove(a)
        if b not in pool:
            return False
        pool.remove(b)
        if op == "+":
            ok = a + b == c
        elif op == "*":
            ok = a * b == c
        elif op == "-":
            ok = a >= b and a - b == c
        else:
            ok = b != 0 and a == b * c
        if not ok:
            return False
        pool.append(c)
    return pool == [target]


@settings(max_examples=200, deadline=None)
@given(problem=small_problem, seed=st.integers(0, 10_000))
def test_mutated_solutions_are_judged_like_an_independent_checker(problem, seed):
    nums, target = problem
    solutions = all_solutions(nums, target)
    if not solutions:
        return
    rng = random.Random(seed)
    steps = list(rng.choice(solutions))
    k = rng.randrange(len(steps))
    a, op, b, c = steps[k]
    kind = rng.randrange(4)
    if kind == 0:
        steps[k] = Step(a, op, b, c + rng.choice([-2, -1, 1, 2]))
    elif kind == 1:
        steps[k] = Step(a, rng.choice("+-*/"), b, c)
    elif kind == 2:
        steps[k] = Step(a + rng.randint(1, 5), op, b, c)
    else:
        del steps[k]
    assert bool(verify_steps(nums, target, steps)) == _independent_check(nums, target, steps)


@settings(max_examples=100, deadline=None)
@given(problem=small_problem)
def test_solution_paths_written_as_text_verify(problem):
    nums, target = problem
    solutions = all_solutions(nums, target)
    if not solutions:
        return
    pool, lines = list(nums), []
    for step in solutions[0]:
        pool.remove(step.a)
        pool.remove(step.b)
        pool.append(step.result)
        lines.append(tl.exploring_line(step, pool))
    text = "".join(lines) + tl.goal_line(target, target)
    assert tl.verify_result(text, nums, target)
