"""Solver-generated demonstrations: sequential SoS+ traces and parallel APR spawn/join trace trees.

Paper section 4.1 ("Stream of Search+" and APR demonstrations) and the reference's ``search.py``,
rewritten for speed (no deep copies, cached heuristics, string parts joined once). Both searches are
a hybrid of beam/best-first search with a heuristic:

- expand up to ``beam`` open nodes at a time; for each, generate every successor, keep the ``beam``
  best by heuristic, shuffle them (so node ids are not sorted by promise) and write them out;
- **SoS+**: with probability ``dive_probability`` the expanded node's kept children are explored
  depth-first right away, inside the same sequential trace (``Start Sub Search at level L: ...``);
- **APR**: with probability ``spawn_probability`` (and when more than one child is kept) the thread
  *spawns* one child thread per kept child instead; each child is its own search with beam
  ``sub_beam``; the join writes their outcomes back and the parent stops if one succeeded.

Deviations from the reference, all documented in the notebooks:

- SoS+ traces start with the root prompt ``Moving to Node #0`` (the reference's ``sosp`` omits that
  line), so SoS+ and APR models share one prompt;
- after a failed spawn the parent writes ``Moving to Node #<next>`` before its next node (the
  reference drops that line because a loop variable is shadowed);
- ties in the open set are broken first-in, first-out (the reference's order is arbitrary);
- children may spawn their own children up to ``max_depth`` levels (the reference: 1);
- the conditioning prefixes ``Sub Call Budget: N`` (number of child threads spawned) and
  ``Token Budget: N`` (total tokens, rounded up) are written on every main call they govern.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass
from functools import lru_cache

from . import trace_language as tl

from . import trace_trees as tt
from .config import DemoConfig
from .countdown import HEURISTIC_TERMS, Problem, combine, get_heuristic


@dataclass(eq=False, slots=True)
class Node:
    nums: tuple[int, ...]
    ops: tuple[str, ...]        # operations so far, as the trace prints them ("94-89=5")
    ops_text: str               # ops formatted once: "['94-89=5']"
    score: int                  # sum of the heuristic's per-number terms
    h: float                    # the heuristic (score, or its mean for "sum")
    node_id: str
    parent: "Node | None"


@lru_cache(maxsize=1 << 16)
def _combinations(a: int, b: int) -> tuple[tuple[int, str], ...]:
    """``(result, operation text)`` for every legal combination; numbers repeat a lot across problems."""
    return tuple((step.result, str(step)) for step in combine(a, b))


class _Terms(dict):
    """The heuristic's per-number terms for one target, computed on first use."""

    def __init__(self, term, target: int):
        super().__init__()
        self.term, self.target = term, target

    def __missing__(self, num: int) -> int:
        value = self[num] = self.term(num, self.target)
        return value


class _Search:
    """One problem's search: target, heuristic, randomness and a first-in-first-out tie-break."""

    def __init__(self, target: int, heuristic: str, rng: random.Random):
        get_heuristic(heuristic)  # a clear error for unknown names
        term, self.mean = HEURISTIC_TERMS[heuristic]
        self.terms = _Terms(term, target)
        self.target = target
        self.rng = rng
        self.tick = itertools.count()

    def root(self, nums) -> Node:
        nums = tuple(nums)
        score = sum(self.terms[x] for x in nums)
        return Node(nums, (), "[]", score, score / len(nums) if self.mean else score, tl.ROOT_ID, None)

    def expand(self, node: Node, beam: int, out: list[str]) -> tuple[list[Node], Node | None]:
        """Write the node's successors; return the kept non-leaf children (best first) and the goal
        node if one was reached.

        Successors are ranked by their summed heuristic terms, updated from the parent's score
        (all successors have the same size, so this is also the order of the mean).
        """
        target, terms, nums = self.target, self.terms, node.nums
        n = len(nums)
        candidates = []
        append = candidates.append
        for i in range(n):
            a = nums[i]
            without_a = node.score - terms[a]
            for j in range(i + 1, n):
                base = without_a - terms[nums[j]]
                for result, op in _combinations(a, nums[j]):
                    append((base + terms[result], i, j, result, op))
        candidates.sort(key=_first)
        del candidates[beam:]
        self.rng.shuffle(candidates)
        kept = []
        prefix = node.ops_text[:-1] + ", " if node.ops else "["
        for score, i, j, result, op in candidates:
            new = nums[:i] + nums[i + 1:j] + nums[j + 1:] + (result,)
            new_text = tl.format_numbers(new)
            out.append(tl.exploring_line(op, new_text))
            if n == 2:
                if result == target:
                    out.append(tl.goal_line(target, target))
                    return kept, Node(new, node.ops + (op,), "", score, score, f"{node.node_id},{len(kept)}", node)
                out.append(tl.dead_end_line(result, target))
                continue
            child = Node(new, node.ops + (op,), f"{prefix}'{op}']", score, score / (n - 1) if self.mean else score,
                         f"{node.node_id},{len(kept)}", node)
            out.append(tl.generated_line(child.node_id, target, new_text, op))
            kept.append(child)
        kept.sort(key=_h)
        return kept, None

    def push(self, open_set: list, node: Node) -> None:
        heapq.heappush(open_set, (node.h, next(self.tick), node))


def _first(candidate):
    return candidate[0]


def _h(node: Node):
    return node.h


def path_text(goal: Node, start: Node, target: int) -> str:
    """The solution path from ``start`` down to ``goal``, written as the reference writes it."""
    chain = [goal]
    while chain[-1] is not start:
        if chain[-1].parent is None:
            raise ValueError("goal node does not descend from the start node")
        chain.append(chain[-1].parent)
    chain.reverse()
    out = [tl.moving_line(start.node_id)]
    for node, nxt in zip(chain, chain[1:]):
        out.append(tl.state_line(target, node.nums, node.ops_text))
        out.append(tl.exploring_line(nxt.ops[-1], nxt.nums))
        if len(nxt.nums) == 1:
            out.append(tl.goal_line(nxt.nums[0], target))
            break
        out.append(tl.generated_line(nxt.node_id, target, nxt.nums, nxt.ops[-1]))
        out.append(tl.moving_line(nxt.node_id))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# SoS+: one sequential trace
# ---------------------------------------------------------------------------------------------

def sosp_trace(problem: Problem, *, beam: int, dive_probability: float = 0.5, heuristic: str = "mult",
               rng: random.Random | None = None) -> str:
    """The SoS+ trace for ``problem`` (starting with the root prompt)."""
    search = _Search(problem.target, heuristic, rng or random.Random(0))
    root = search.root(problem.nums)
    out = [tl.moving_line(root.node_id)]
    _sosp(search, root, root, beam, dive_probability, 0, out)
    return "".join(out)


def _sosp(search: _Search, start: Node, root: Node, beam: int, dive: float, level: int, out: list[str]) -> bool:
    open_set: list = []
    search.push(open_set, start)
    while open_set:
        current = [heapq.heappop(open_set)[2] for _ in range(min(beam, len(open_set)))]
        for k, node in enumerate(current):
            out.append(tl.state_line(search.target, node.nums, node.ops_text))
            kept, goal = search.expand(node, beam, out)
            if goal is not None:
                out.append(path_text(goal, root, search.target))
                return True
            if search.rng.random() < dive:
                for child in kept:
                    out.append(tl.dive_start_line(level + 1, child.node_id))
                    found = _sosp(search, child, root, beam, dive, level + 1, out)
                    out.append(tl.dive_exit_line(level + 1))
                    if found:
                        return True
                    out.append(tl.DIVE_FAILED + "\n")
            else:
                for child in kept:
                    search.push(open_set, child)
            if k < len(current) - 1:
                out.append(tl.moving_line(current[k + 1].node_id))
        if open_set:
            out.append(tl.moving_line(open_set[0][2].node_id))
    out.append(tl.NO_SOLUTION + "\n")
    return False


# ---------------------------------------------------------------------------------------------
# APR: a tree of threads
# ---------------------------------------------------------------------------------------------

def apr_tree(problem: Problem, *, beam: int, sub_beam: int, spawn_probability: float = 0.9,
             max_depth: int = 1, heuristic: str = "mult", rng: random.Random | None = None) -> dict:
    """The APR trace tree for ``problem``: ``{"main_calls": [...], "sub_calls": [[child, ...], ...]}``."""
    search = _Search(problem.target, heuristic, rng or random.Random(0))
    tree, _ = _apr(search, search.root(problem.nums), beam, sub_beam, spawn_probability, 0, max_depth)
    return tree


def _apr(search: _Search, start: Node, beam: int, sub_beam: int, spawn_p: float, level: int,
         max_depth: int) -> tuple[dict, Node | None]:
    target = search.target
    calls: list[list[str]] = [[tl.moving_line(start.node_id)]]
    sub_calls: list[list[dict]] = []
    tree = {"main_calls": calls, "sub_calls": sub_calls}

    def finish(goal: Node | None):
        tree["main_calls"] = ["".join(parts) for parts in calls]
        return tree, goal

    open_set: list = []
    search.push(open_set, start)
    while open_set:
        current = [heapq.heappop(open_set)[2] for _ in range(min(beam, len(open_set)))]
        for k, node in enumerate(current):
            out = calls[-1]
            out.append(tl.state_line(search.target, node.nums, node.ops_text))
            kept, goal = search.expand(node, beam, out)
            if goal is not None:
                out.append(path_text(goal, start, target))
                return finish(goal)
            if level < max_depth and len(kept) > 1 and search.rng.random() < spawn_p:
                children = [_apr(search, child, sub_beam, sub_beam, spawn_p, level + 1, max_depth) for child in kept]
                sub_calls.append([child_tree for child_tree, _ in children])
                before = "".join(out)
                out.append(tl.spawn_block(level + 1, [child.node_id for child in kept]))
                joined = [before, tl.JOIN_OPEN, "\n"]
                for i, (child, (child_tree, child_goal)) in enumerate(zip(kept, children)):
                    if child_goal is None:
                        joined.append(f"<No Solution in Sub Search {i} at level {level + 1} at Node #{child.node_id}>\n")
                    else:
                        joined.append(f"<Goal Reached in Sub Search {i} at level {level + 1} at Node #{child.node_id}>\n")
                        joined.append(path_text(child_goal, child, target))
                joined.append(tl.JOIN_CLOSE + "\n")
                calls.append(joined)
                for _, child_goal in children:
                    if child_goal is not None:
                        joined.append(tl.goal_line(target, target))
                        joined.append(path_text(child_goal, start, target))
                        return finish(child_goal)
            else:
                for child in kept:
                    search.push(open_set, child)
            if k < len(current) - 1:
                calls[-1].append(tl.moving_line(current[k + 1].node_id))
        if open_set:
            calls[-1].append(tl.moving_line(open_set[0][2].node_id))
    calls[-1].append(tl.NO_SOLUTION + "\n")
    return finish(None)


# ---------------------------------------------------------------------------------------------
# Conditioning and one problem's demonstrations
# ---------------------------------------------------------------------------------------------

def prefix_tree(tree: dict, prefix: str, children_too: bool) -> dict:
    """A copy of ``tree`` whose main calls start with ``prefix`` (and its children's, if asked)."""
    return {
        "main_calls": [prefix + text for text in tree["main_calls"]],
        "sub_calls": [[prefix_tree(c, prefix, children_too) if children_too else c for c in children]
                      for children in tree.get("sub_calls", [])],
    }


def condition_tree(tree: dict, kind: str | None, *, token_budget_step: int = 512, count=tl.count_tokens) -> dict:
    """Write the paper's conditioning prefix on a demonstration, using its true value:
    ``Sub Call Budget: <child threads spawned>`` on the root's main calls, or
    ``Token Budget: <total tokens rounded up>`` on every thread (as the reference's inference passes it on)."""
    if kind is None:
        return tree
    stats = tt.tree_stats(tree, count)
    if kind == "sub_calls":
        return prefix_tree(tree, tl.condition_prefix(kind, stats.n_threads - 1), children_too=False)
    budget = math.ceil(stats.total_tokens / token_budget_step) * token_budget_step
    return prefix_tree(tree, tl.condition_prefix(kind, budget), children_too=True)


def condition_sosp(trace: str, token_budget_step: int = 512, count=tl.count_tokens) -> str:
    """A SoS+ trace with ``Token Budget: <its tokens rounded up>`` before ``Moving to Node #0``."""
    budget = math.ceil(count(trace) / token_budget_step) * token_budget_step
    return tl.condition_prefix("tokens", budget) + trace


def demonstrate(problem: Problem, demo: DemoConfig, rng: random.Random) -> dict:
    """One problem's SoS+ trace and APR tree, with randomly drawn beams (recorded in the row)."""
    sosp_beam = rng.randint(demo.sosp_min_beam, demo.sosp_max_beam)
    sosp = sosp_trace(problem, beam=sosp_beam, dive_probability=demo.sosp_dive_probability,
                      heuristic=demo.heuristic, rng=rng)
    beam = rng.randint(demo.apr_min_beam, demo.apr_max_beam)
    sub_beam = rng.randint(beam, max(beam, demo.apr_max_sub_beam))
    tree = apr_tree(problem, beam=beam, sub_beam=sub_beam, spawn_probability=demo.spawn_probability,
                    max_depth=demo.max_spawn_depth, heuristic=demo.heuristic, rng=rng)
    tree = condition_tree(tree, demo.condition, token_budget_step=demo.token_budget_step)
    if demo.sosp_token_budget:
        sosp = condition_sosp(sosp, demo.token_budget_step)
    sosp_result = tl.extract_result(sosp)
    apr_result = tl.extract_result(tree["main_calls"][-1])
    return {
        **problem.to_dict(),
        "sosp": {"beam": sosp_beam, "trace": sosp, "result": sosp_result,
                 "solved": bool(tl.verify_result(sosp_result, problem.nums, problem.target))},
        "apr": {"beam": beam, "sub_beam": sub_beam, "trace_dict": tree, "result": apr_result,
                "solved": bool(tl.verify_result(apr_result, problem.nums, problem.target))},
    }
