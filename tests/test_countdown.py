import random

import pytest

from apr_mini.config import TaskConfig
from apr_mini.countdown import (Problem, Step, all_solutions, combine, is_solvable, mult_heuristic, problem_chunk,
                                solve, sum_heuristic, verify_steps)


def test_combine_follows_the_papers_rules():
    assert [str(s) for s in combine(84, 26)] == ["84+26=110", "84*26=2184", "84-26=58"]
    assert [str(s) for s in combine(5, 30)] == ["5+30=35", "5*30=150", "30-5=25", "30/5=6"]
    assert [str(s) for s in combine(0, 7)] == ["0+7=7", "0*7=0", "7-0=7"]  # no division by zero


def test_solver_finds_known_solution_and_reports_unsolvable():
    path = solve([32, 84, 26, 59], 24)
    assert path is not None and verify_steps([32, 84, 26, 59], 24, path)
    assert solve([1, 1, 1], 99) is None and not is_solvable([1, 1, 1], 99)
    solutions = all_solutions([32, 84, 26, 59], 24)
    assert ["32+59=91", "84*26=2184", "2184/91=24"] in [[str(s) for s in p] for p in solutions]
    assert len({tuple(p) for p in solutions}) == len(solutions)


def test_is_solvable_agrees_with_all_solutions():
    rng = random.Random(0)
    for _ in range(200):
        nums = [rng.randint(1, 12) for _ in range(3)]
        target = rng.randint(10, 36)
        assert is_solvable(nums, target) == bool(all_solutions(nums, target))


def test_heuristics_match_the_reference_definitions():
    def reference_mult(nums, target):
        factors = [i for i in range(2, target + 1) if target % i == 0]
        return sum(min(abs(n - f) for f in factors) for n in nums)

    rng = random.Random(1)
    for _ in range(300):
        nums = [rng.randint(0, 3000) for _ in range(rng.randint(1, 4))]
        target = rng.randint(2, 100)
        assert mult_heuristic(nums, target) == reference_mult(nums, target)
    assert sum_heuristic([30], 24) == 6
    assert sum_heuristic([20, 30], 24) == 5


@pytest.mark.parametrize("steps, reason", [
    ([Step(32, "+", 59, 91), Step(84, "*", 26, 2184), Step(2184, "/", 91, 24)], ""),
    ([Step(32, "+", 59, 90)], "wrong arithmetic"),
    ([Step(26, "-", 84, -58)], "big-minus-small"),
    ([Step(84, "/", 26, 3)], "not exact"),
    ([Step(84, "/", 0, 0)], "division by zero"),
    ([Step(32, "+", 32, 64)], "uses 32 twice, but [26, 32, 59, 84] has only 1 of it"),
    ([Step(7, "+", 32, 39)], "7 is not among the numbers left"),
    ([Step(32, "+", 59, 91), Step(84, "*", 26, 2184)], "ends with"),
    ([Step(32, "%", 59, 32)], "unknown operator"),
])
def test_verifier_says_why(steps, reason):
    verdict = verify_steps([32, 84, 26, 59], 24, steps)
    assert bool(verdict) == (reason == "")
    assert reason in verdict.reason


def test_verifier_checks_stated_numbers():
    steps = [Step(32, "+", 59, 91), Step(84, "*", 26, 2184), Step(2184, "/", 91, 24)]
    good = [(84, 26, 91), (91, 2184), (24,)]
    assert verify_steps([32, 84, 26, 59], 24, steps, good)
    bad = [(84, 26, 91), (91, 2185), (24,)]
    assert "resulting numbers" in verify_steps([32, 84, 26, 59], 24, steps, bad).reason


def test_problem_stream_is_seeded_solvable_and_in_range():
    task = TaskConfig(n_numbers=4, min_number=1, max_number=99, min_target=10, max_target=100)
    a = problem_chunk(task, 7, "train", 3, 50)
    assert a == problem_chunk(task, 7, "train", 3, 50)
    assert a != problem_chunk(task, 8, "train", 3, 50)
    for p in a:
        assert len(p.nums) == 4 and all(1 <= n <= 99 for n in p.nums) and 10 <= p.target <= 100
        assert is_solvable(p.nums, p.target)
    assert Problem.from_dict(a[0].to_dict()) == a[0]


@pytest.mark.parametrize("kwargs", [dict(n_numbers=1), dict(min_number=5, max_number=2), dict(min_target=0)])
def test_task_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        TaskConfig(**kwargs)
