"""The Countdown game: problems, an exact solver, the paper's heuristics and a strict verifier.

Paper section 4.1 (task) and the reference's ``countdown_utils``. The rules, as the paper's solver
plays them: combine two of the current numbers with ``+ - * /`` into one new number until a single
number is left; it must equal the target. Results are integers: subtraction is always
big-minus-small and division must be exact (``b != 0`` and ``a % b == 0``). Every number is used
exactly once.

The verifier is stricter than the reference's trajectory checker, which never removes used numbers
and compares ``/`` results as floats: :func:`verify_steps` replays each step on a multiset of the
numbers still available and says why a path fails.

Deviation: problems are drawn as target first, then numbers until solvable (as the reference does),
but with configurable ranges and seeded per-chunk random streams so that multiprocessing gives the
same problems as a single process.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, NamedTuple

from .config import TaskConfig

OPERATORS = "+-*/"


class Step(NamedTuple):
    """One operation ``a op b = result``, printed as the trace language prints it (``84*26=2184``)."""

    a: int
    op: str
    b: int
    result: int

    def __str__(self) -> str:
        return f"{self.a}{self.op}{self.b}={self.result}"


def combine(a: int, b: int) -> list[Step]:
    """Every legal way to combine ``a`` and ``b``, in the reference solver's order: + * - /."""
    big, small = (a, b) if a > b else (b, a)
    steps = [Step(a, "+", b, a + b), Step(a, "*", b, a * b), Step(big, "-", small, big - small)]
    if small != 0 and big % small == 0:
        steps.append(Step(big, "/", small, big // small))
    return steps


def successors(nums: tuple[int, ...]) -> Iterable[tuple[Step, tuple[int, ...]]]:
    """Yield ``(step, new_numbers)`` for every pair ``i < j``: the untouched numbers, then the result."""
    n = len(nums)
    for i in range(n):
        for j in range(i + 1, n):
            rest = nums[:i] + nums[i + 1:j] + nums[j + 1:]
            for step in combine(nums[i], nums[j]):
                yield step, rest + (step.result,)


# ---------------------------------------------------------------------------------------------
# Heuristics (lower is more promising), as the reference defines them
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _factors(target: int) -> tuple[int, ...]:
    factors = tuple(i for i in range(2, target + 1) if target % i == 0)
    return factors or (target,)


def factor_distance(num: int, target: int) -> int:
    """Distance from ``num`` to the nearest factor (>= 2) of ``target``."""
    factors = _factors(target)
    k = bisect.bisect_left(factors, num)
    if k == 0:
        return factors[0] - num
    if k == len(factors):
        return num - factors[-1]
    return min(factors[k] - num, num - factors[k - 1])


def target_distance(num: int, target: int) -> int:
    return abs(num - target)


def mult_heuristic(nums: Iterable[int], target: int) -> int:
    """Sum over the numbers of the distance to the nearest factor of the target."""
    return sum(factor_distance(num, target) for num in nums)


def sum_heuristic(nums: Iterable[int], target: int) -> float:
    """Mean distance of the numbers to the target."""
    nums = list(nums)
    return sum(target_distance(num, target) for num in nums) / len(nums)


HEURISTICS = {"mult": mult_heuristic, "sum": sum_heuristic}
# Both heuristics aggregate one term per number: (term, whether the aggregate is the mean).
# The solver uses this form to update a state's score from its parent's in O(1).
HEURISTIC_TERMS = {"mult": (factor_distance, False), "sum": (target_distance, True)}


def get_heuristic(name: str):
    try:
        return HEURISTICS[name]
    except KeyError:
        raise ValueError(f"unknown heuristic {name!r}; choose one of {sorted(HEURISTICS)}") from None


# ---------------------------------------------------------------------------------------------
# Exact solver
# ---------------------------------------------------------------------------------------------

def _two_reach(a: int, b: int, target: int) -> bool:
    if a < b:
        a, b = b, a
    return (a + b == target or a * b == target or a - b == target
            or (b != 0 and a % b == 0 and a // b == target))


def is_solvable(nums: Iterable[int], target: int) -> bool:
    """Whether some order of operations turns ``nums`` into ``target`` (depth-first, early exit)."""
    return _reach(tuple(nums), target)


def _reach(nums: tuple[int, ...], target: int) -> bool:
    n = len(nums)
    if n == 1:
        return nums[0] == target
    if n == 2:
        return _two_reach(nums[0], nums[1], target)
    for i in range(n):
        for j in range(i + 1, n):
            rest = nums[:i] + nums[i + 1:j] + nums[j + 1:]
            a, b = nums[i], nums[j]
            if a < b:
                a, b = b, a
            results = [a + b, a * b, a - b]
            if b != 0 and a % b == 0:
                results.append(a // b)
            for r in results:
                if _reach(rest + (r,), target):
                    return True
    return False


def solve(nums: Iterable[int], target: int) -> list[Step] | None:
    """The first solution found (a list of steps), or ``None`` if the problem has none."""
    for path in _paths(tuple(nums), target):
        return path
    return None


def all_solutions(nums: Iterable[int], target: int) -> list[list[Step]]:
    """Every distinct solution path (different orders of the same operations count separately)."""
    seen, out = set(), []
    for path in _paths(tuple(nums), target):
        key = tuple(path)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _paths(nums: tuple[int, ...], target: int, prefix: tuple[Step, ...] = ()):
    if len(nums) == 1:
        if nums[0] == target:
            yield list(prefix)
        return
    for step, new in successors(nums):
        yield from _paths(new, target, prefix + (step,))


# ---------------------------------------------------------------------------------------------
# Strict verifier
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """The verifier's answer: ``ok`` and, when not, ``reason`` and the 0-based ``step`` at fault."""

    ok: bool
    reason: str = ""
    step: int | None = None

    def __bool__(self) -> bool:
        return self.ok


def apply_step(available: list[int], step: Step) -> str | None:
    """Apply ``step`` to the multiset ``available`` in place; return why it is illegal, or None."""
    a, op, b, result = step
    if op == "+":
        true = a + b
    elif op == "*":
        true = a * b
    elif op == "-":
        if a < b:
            return f"{step}: subtraction must be big-minus-small"
        true = a - b
    elif op == "/":
        if b == 0:
            return f"{step}: division by zero"
        if a % b:
            return f"{step}: division is not exact"
        true = a // b
    else:
        return f"{step}: unknown operator {op!r}"
    if true != result:
        return f"{step}: wrong arithmetic, {a}{op}{b} is {true}"
    pool = list(available)
    for operand in (a, b):
        if operand not in pool:
            if operand in available:  # e.g. 32+32 with one 32: the number is there, but already used
                count = available.count(operand)
                return f"{step}: uses {operand} twice, but {sorted(available)} has only {count} of it"
            return f"{step}: {operand} is not among the numbers left, {sorted(available)}"
        pool.remove(operand)
    available[:] = pool + [result]
    return None


def verify_steps(nums: Iterable[int], target: int, steps: Iterable[Step],
                 stated_numbers: Iterable[Iterable[int] | None] | None = None) -> Verdict:
    """Replay ``steps`` on the initial ``nums``; accept only if exactly ``[target]`` is left.

    ``stated_numbers``, if given, holds for each step the numbers the trace claims result from it
    (``Resulting Numbers: [...]``); they must match the true multiset (in any order).
    """
    available = list(nums)
    stated = list(stated_numbers) if stated_numbers is not None else None
    steps = list(steps)
    for k, step in enumerate(steps):
        problem = apply_step(available, step)
        if problem:
            return Verdict(False, problem, k)
        if stated is not None and k < len(stated) and stated[k] is not None:
            claim = sorted(stated[k])
            if claim != sorted(available):
                return Verdict(False, f"{step}: resulting numbers {claim} should be {sorted(available)}", k)
    if available != [target]:
        return Verdict(False, f"ends with {sorted(available)}, not [{target}]", len(steps) - 1 if steps else None)
    return Verdict(True)


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    nums: tuple[int, ...]
    target: int

    @property
    def key(self) -> tuple[tuple[int, ...], int]:
        """Identity for split hygiene: the sorted numbers and the target."""
        return tuple(sorted(self.nums)), self.target

    def to_dict(self) -> dict:
        return {"nums": list(self.nums), "target": self.target}

    @classmethod
    def from_dict(cls, row: dict) -> "Problem":
        return cls(tuple(int(x) for x in row["nums"]), int(row["target"]))


def problem_space(task: TaskConfig) -> list[Problem]:
    """Every distinct solvable problem of a task (sorted numbers and a target): what its train,
    validation and test splits are drawn from, without replacement."""
    from itertools import combinations_with_replacement

    numbers = range(task.min_number, task.max_number + 1)
    return [Problem(nums, target) for nums in combinations_with_replacement(numbers, task.n_numbers)
            for target in range(task.min_target, task.max_target + 1) if _reach(nums, target)]


def random_problem(task: TaskConfig, rng: random.Random, max_tries: int = 10_000) -> Problem:
    """A solvable problem: draw the target, then draw numbers until the target is reachable."""
    target = rng.randint(task.min_target, task.max_target)
    for _ in range(max_tries):
        nums = tuple(rng.randint(task.min_number, task.max_number) for _ in range(task.n_numbers))
        if _reach(nums, target):
            return Problem(nums, target)
    raise RuntimeError(f"no solvable numbers for target {target} after {max_tries} draws: "
                       f"check the task ranges {task}")


def problem_chunk(task: TaskConfig, seed: int, stream: str, chunk: int, size: int) -> list[Problem]:
    """Chunk ``chunk`` of a seeded problem stream; each chunk has its own RNG, so chunks can be
    generated in any order or process and the stream stays the same."""
    rng = random.Random(f"{seed}:{stream}:{chunk}")
    return [random_problem(task, rng) for _ in range(size)]
