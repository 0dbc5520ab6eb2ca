"""Where each method loses: every engine record's outcome, named by the first link of its search that broke.

An APR tree solves a problem through a chain: the root spawns children, at least one child starts
from a state that can still reach the target, such a child finds a solution, and the join carries
that solution to a verified final answer. A SoS+ trace is the chain without spawns. The cause of a
failure is the first broken link, checked in this order:

- ``out of context``: a thread that mattered ran out of its window (the root, or, when no child
  found a solution, a child with a solvable state);
- ``no solvable child``: the root spawned, and not one child holds a state that can reach the target
  (the parent's choice of first moves lost the problem; the children could not have won it);
- ``child missed``: some child held a solvable state, and none of the children found a solution;
- ``lost at join or answer``: a child found a solution, and the final answer does not verify;
- ``wrong answer``: no spawn, and the root's own answer does not verify;
- ``never answered``: no spawn, and the root ended without an answer (``No solution found.``, or a
  token limit other than the window).

Solvability is exact (:func:`apr_mini.countdown.is_solvable`), so "no solvable child" is a fact about
the tree, not a guess. Children are the root's direct children; a child's solution counts wherever it
was found below them (a nested spawn is the child's own search).
"""

from __future__ import annotations

from collections import Counter

from . import trace_language as tl
from .countdown import is_solvable
from .engine import CONTEXT_FULL

SOLVED = "solved"
OUT_OF_CONTEXT = "out of context"
NO_SOLVABLE_CHILD = "no solvable child"
CHILD_MISSED = "child missed"
LOST_AT_JOIN = "lost at join or answer"
WRONG_ANSWER = "wrong answer"
NEVER_ANSWERED = "never answered"
CAUSES = (NO_SOLVABLE_CHILD, CHILD_MISSED, LOST_AT_JOIN, OUT_OF_CONTEXT, WRONG_ANSWER, NEVER_ANSWERED)


def _child_state(child: dict):
    """The child's starting node, or None when its prompt does not parse (a malformed spawn)."""
    try:
        return tl.parse_prompt(child["main_calls"][0])
    except (tl.TraceFormatError, IndexError, KeyError):
        return None


def _found(thread: dict, state) -> bool:
    """Whether ``thread`` (a child) or any thread below it wrote a solution of ``state``'s sub-problem."""
    if thread.get("failure") is None and thread.get("main_calls"):
        if tl.verify_trace(thread["main_calls"][-1], state.nums, state.target).ok:
            return True
    return any(_found(grandchild, state) for spawn in thread.get("sub_calls", []) for grandchild in spawn)


def loss_cause(record: dict) -> str:
    """:data:`SOLVED` or one of :data:`CAUSES` for one engine record (``{"tree", "verified", ...}``)."""
    if record.get("verified"):
        return SOLVED
    root = record["tree"]
    if root.get("failure") == CONTEXT_FULL:
        return OUT_OF_CONTEXT
    children = [child for spawn in root.get("sub_calls", []) for child in spawn]
    if not children:
        answered = root.get("failure") is None and tl.extract_result(root["main_calls"][-1]) is not None
        return WRONG_ANSWER if answered else NEVER_ANSWERED
    states = [(child, _child_state(child)) for child in children]
    solvable = [(child, s) for child, s in states if s is not None and is_solvable(s.nums, s.target)]
    if not solvable:
        return NO_SOLVABLE_CHILD
    if any(_found(child, s) for child, s in solvable):
        return LOST_AT_JOIN
    if any(child.get("failure") == CONTEXT_FULL for child, _ in solvable):
        return OUT_OF_CONTEXT
    return CHILD_MISSED


def root_spawns(record: dict) -> bool:
    """Whether the root thread really spawned (at least one child ran)."""
    return any(spawn for spawn in record["tree"].get("sub_calls", []))


def loss_attribution(records: list[dict]) -> dict:
    """Counts of every cause over ``records``, with ``n``, ``solved`` and ``root_spawns`` (the share of
    problems whose root spawned), in a fixed key order so tables line up across methods."""
    counts = Counter(loss_cause(r) for r in records)
    n = len(records)
    return {"n": n, "solved": counts[SOLVED], **{cause: counts[cause] for cause in CAUSES},
            "root_spawns": round(sum(map(root_spawns, records)) / max(1, n), 4)}
