"""The trace language: markers, prompts, parsing, spawn/join, results and token counting.

Paper section 3 (APR's spawn/join) in the public reference's exact text format, so that its released
data and checkpoints would work with apr-mini. This is the only module that knows the format;
the solver, the engine and the evaluation import it. Nothing here calls ``eval``: states and
operations are parsed with small regular expressions, and bad text raises
:class:`TraceFormatError` (a ``ValueError``) with a readable message. Whole trace trees (their threads,
token timeline, metrics and SFT rows) are :mod:`apr_mini.trace_trees`'s.

A thread's text, and what the engine does with it::

    Moving to Node #0                                      <- root prompt (optionally preceded by
    Current State: 30:[94, 18, 89, 12], Operations: []        "Sub Call Budget: N " / "Token Budget: N ")
    Exploring Operation: 94-89=5, Resulting Numbers: [18, 12, 5]
    Generated Node #0,2: 30:[18, 12, 5] Operation: 94-89=5
    <Calling Sub Searches>                                 <- spawn: the thread stops here
    <Start Sub Search 0 at level 1> Moving to Node #0,2
    <End Calling Sub Searches>

Each child starts from ``Moving to Node #0,2\\nCurrent State: 30:[18, 12, 5], Operations: ['94-89=5']``
(:func:`child_prompts`). The join (:func:`join_text`) replaces the spawn block with one
``<Goal Reached in Sub Search i at level L at Node #id>`` + the child's result, or
``<No Solution in Sub Search i ...>``, inside ``<Sub Searches> ... <End Sub Searches>``, and the
parent continues. A thread's result is the text after its second-to-last "Goal Reached"
(:func:`extract_result`); it counts only if :func:`verify_result` replays it on the true numbers.

Deviations from the reference: the join writes each spawn's real level (the reference writes
"level 1" always, which is the same for the one level it supports), and spawn blocks are parsed
strictly (every line must be a well-formed ``<Start Sub Search i at level L>`` line, numbered
0, 1, ...), so that a malformed spawn is a recorded failure rather than a silent partial one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from .countdown import Step, Verdict, verify_steps

# ---------------------------------------------------------------------------------------------
# Markers
# ---------------------------------------------------------------------------------------------

GOAL = "Goal Reached"
NO_SOLUTION = "No solution found."
DIVE_FAILED = "No solution found in sub search"
SPAWN_OPEN = "<Calling Sub Searches>"
SPAWN_CLOSE = "<End Calling Sub Searches>"
JOIN_OPEN = "<Sub Searches>"
JOIN_CLOSE = "<End Sub Searches>"
SUB_CALL_BUDGET = "Sub Call Budget: "
TOKEN_BUDGET = "Token Budget: "
ROOT_ID = "0"

# Fixed phrases of the language, longest first: the tokenizer treats each as one token and splits
# everything else into single digits and single characters (see :func:`split_tokens`).
PHRASES = sorted({
    "Moving to Node #", "Current State: ", ", Operations: ", "Exploring Operation: ",
    ", Resulting Numbers: ", "Generated Node #", " Operation: ", " equal: Goal Reached",
    " unequal: No Solution", NO_SOLUTION, DIVE_FAILED, "Start Sub Search at level ",
    "Exit Sub Search at level ", SPAWN_OPEN, SPAWN_CLOSE, "<Start Sub Search ", JOIN_OPEN,
    JOIN_CLOSE, "<Goal Reached in Sub Search ", "<No Solution in Sub Search ", " at level ",
    " at Node #", "> Moving to Node #", SUB_CALL_BUDGET, TOKEN_BUDGET, "', '", "['", "']", ", ",
}, key=lambda p: (-len(p), p))
_PHRASE_PATTERN = "|".join(re.escape(p) for p in PHRASES)
TOKEN_PATTERN = re.compile(_PHRASE_PATTERN + r"|\d|[\s\S]")
_PHRASE_RE = re.compile(_PHRASE_PATTERN)


class TraceFormatError(ValueError):
    """Text that does not follow the trace language."""


# ---------------------------------------------------------------------------------------------
# Writing: every line of the language
# ---------------------------------------------------------------------------------------------

def format_numbers(nums: Iterable[int] | str) -> str:
    """``[94, 18, 5]``; text that is already formatted passes through (the solver caches it)."""
    return nums if isinstance(nums, str) else "[" + ", ".join(map(str, nums)) + "]"


def format_operations(ops: Iterable[Step | str] | str) -> str:
    """``['94-89=5', '18+12=30']`` (Python's list repr, as the reference prints it)."""
    return ops if isinstance(ops, str) else "[" + ", ".join(f"'{op}'" for op in ops) + "]"


def moving_line(node_id: str) -> str:
    return f"Moving to Node #{node_id}\n"


def state_line(target: int, nums, ops) -> str:
    return f"Current State: {target}:{format_numbers(nums)}, Operations: {format_operations(ops)}\n"


def exploring_line(step: Step | str, nums) -> str:
    return f"Exploring Operation: {step}, Resulting Numbers: {format_numbers(nums)}\n"


def generated_line(node_id: str, target: int, nums, step: Step | str) -> str:
    return f"Generated Node #{node_id}: {target}:{format_numbers(nums)} Operation: {step}\n"


def goal_line(value: int, target: int) -> str:
    return f"{value},{target} equal: {GOAL}\n"


def dead_end_line(value: int, target: int) -> str:
    return f"{value},{target} unequal: No Solution\n"


def dive_start_line(level: int, node_id: str) -> str:
    """SoS+ only: a depth-first dive inside the one sequential trace."""
    return f"Start Sub Search at level {level}: Moving to Node #{node_id}\n"


def dive_exit_line(level: int) -> str:
    return f"Exit Sub Search at level {level}\n"


def spawn_block(level: int, node_ids: Sequence[str]) -> str:
    """The spawn request; the thread's text ends with it (plus a newline in demonstrations)."""
    lines = [f"<Start Sub Search {i} at level {level}> Moving to Node #{nid}\n" for i, nid in enumerate(node_ids)]
    return f"{SPAWN_OPEN}\n" + "".join(lines) + f"{SPAWN_CLOSE}\n"


def condition_prefix(kind: str | None, value: int | None) -> str:
    """``Sub Call Budget: N `` or ``Token Budget: N `` (placed before ``Moving to Node #0``)."""
    if kind is None:
        return ""
    if kind == "sub_calls":
        return f"{SUB_CALL_BUDGET}{value} "
    if kind == "tokens":
        return f"{TOKEN_BUDGET}{value} "
    raise ValueError(f"unknown condition {kind!r}; use None, 'sub_calls' or 'tokens'")


def root_prompt(target: int, nums: Iterable[int], prefix: str = "") -> str:
    """The reference's root prompt (no final newline): the model continues from here."""
    return f"{prefix}Moving to Node #{ROOT_ID}\n" + state_line(target, nums, [])[:-1]


def node_prompt(node_id: str, target: int, nums: Iterable[int], ops: Iterable[Step | str], prefix: str = "") -> str:
    """A child's prompt: it starts a fresh thread at ``node_id``."""
    return f"{prefix}Moving to Node #{node_id}\n" + state_line(target, nums, ops)[:-1]


# ---------------------------------------------------------------------------------------------
# Reading: states, operations, node tables
# ---------------------------------------------------------------------------------------------

# The language is ASCII: re.ASCII makes \d mean [0-9] (not "²" or "٣"). A list's inside stops at the
# next bracket of either kind, so a search over a line of repeated openers fails fast at each one
# instead of rescanning the rest of the line: parsing stays linear in the text's length.
_MAX_DIGITS = 30  # far above any Countdown value; keeps int() cheap on hostile input
_STATE_RE = re.compile(r"Current State: (\d+):\[([^\[\]\n]*)\], Operations: \[([^\[\]\n]*)\]", re.ASCII)
_OP_RE = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)", re.ASCII)
_GENERATED_RE = re.compile(r"Generated Node #([\d,]+): (\d+):\[([^\[\]\n]*)\] Operation: (\S+)", re.ASCII)
_EXPLORING_RE = re.compile(r"Exploring Operation:\s*(\d+)([-+*/])(\d+)=(\d+),\s*Resulting Numbers:\s*\[([^\[\]\n]*)\]",
                           re.ASCII)
_SPAWN_LINE_RE = re.compile(r"<Start Sub Search (\d+) at level (\d+)> Moving to Node #(\d+(?:,\d+)*)", re.ASCII)
_NODE_ID_RE = re.compile(r"\d+(?:,\d+)*", re.ASCII)


def _int(digits: str) -> int:
    """An ASCII decimal number, or :class:`TraceFormatError` (never a bare ``ValueError``)."""
    if not digits or len(digits) > _MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise TraceFormatError(f"not a number: {digits[:40]!r}")
    return int(digits)


def parse_numbers(inner: str) -> tuple[int, ...]:
    """``"94, 18, 5"`` (the inside of ``[...]``) -> ``(94, 18, 5)``."""
    inner = inner.strip()
    if not inner:
        return ()
    return tuple(_int(part.strip()) for part in inner.split(","))


def parse_operation(text: str) -> Step:
    """``"84*26=2184"`` -> ``Step(84, '*', 26, 2184)``."""
    match = _OP_RE.fullmatch(text.strip())
    if not match:
        raise TraceFormatError(f"not an operation: {text[:60]!r}")
    a, op, b, c = match.groups()
    return Step(_int(a), op, _int(b), _int(c))


def parse_operations(inner: str) -> tuple[Step, ...]:
    """``"'94-89=5', '18+12=30'"`` (the inside of an Operations list) -> steps."""
    inner = inner.strip()
    if not inner:
        return ()
    steps = []
    for part in inner.split(","):
        part = part.strip()
        if len(part) < 2 or part[0] != "'" or part[-1] != "'":
            raise TraceFormatError(f"operation not quoted: {part[:60]!r}")
        steps.append(parse_operation(part[1:-1]))
    return tuple(steps)


@dataclass(frozen=True)
class NodeState:
    node_id: str
    target: int
    nums: tuple[int, ...]
    ops: tuple[Step, ...]


def parse_state_line(line: str) -> tuple[int, tuple[int, ...], tuple[Step, ...]]:
    """``Current State: T:[...], Operations: [...]`` -> ``(target, nums, ops)``."""
    match = _STATE_RE.search(line)
    if not match:
        raise TraceFormatError(f"not a state line: {line[:80]!r}")
    return _int(match.group(1)), parse_numbers(match.group(2)), parse_operations(match.group(3))


def parse_prompt(prompt: str) -> NodeState:
    """A root or child prompt -> its node (conditioning prefix allowed before ``Moving to Node``)."""
    lines = prompt.split("\n")
    if len(lines) < 2 or "Moving to Node #" not in lines[0]:
        raise TraceFormatError(f"not a prompt: {prompt[:80]!r}")
    node_id = lines[0].split("Moving to Node #", 1)[1].strip()
    if not _NODE_ID_RE.fullmatch(node_id):
        raise TraceFormatError(f"bad node id {node_id[:40]!r}")
    return NodeState(node_id, *parse_state_line(lines[1]))


def node_table(text: str) -> dict[str, NodeState]:
    """Every node a thread's text defines, by id (the reference's rule):

    1. a line with ``Moving to Node #id`` followed by a ``Current State`` line defines ``id``
       (a later definition replaces an earlier one);
    2. a ``Generated Node #id: T:[...] Operation: op`` line defines ``id`` (unless rule 1 did)
       as its parent's operations plus ``op``. Lines that do not parse are skipped.
    """
    lines = text.split("\n")
    table: dict[str, NodeState] = {}
    for line, nxt in zip(lines, lines[1:]):
        if "Moving to Node #" in line and "Current State:" in nxt:
            node_id = line.split("Moving to Node #", 1)[1].strip()
            try:
                table[node_id] = NodeState(node_id, *parse_state_line(nxt))
            except TraceFormatError:
                continue
    for line in lines:
        match = _GENERATED_RE.search(line)
        if not match or match.group(1) in table:
            continue
        node_id, target, nums, op = match.groups()
        parent = table.get(node_id.rsplit(",", 1)[0]) if "," in node_id else None
        if parent is None:
            continue
        try:
            table[node_id] = NodeState(node_id, _int(target), parse_numbers(nums),
                                       parent.ops + (parse_operation(op),))
        except TraceFormatError:
            continue
    return table


def leading_condition(text: str) -> str:
    """The conditioning prefix of a prompt's first line (``"Token Budget: 4096 "``), or ``""``."""
    first = text.split("\n", 1)[0]
    return first.split("Moving to Node", 1)[0] if "Moving to Node" in first else ""


# ---------------------------------------------------------------------------------------------
# Spawn and join
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spawn:
    """A parsed spawn request: where the parent's text stops, the level and the children's nodes."""

    before: str  # the parent's text before "<Calling Sub Searches>\n"
    level: int
    node_ids: tuple[str, ...]


def is_spawn(text: str) -> bool:
    """Whether a thread's text ends with a spawn request (``<End Calling Sub Searches>``)."""
    return text.rstrip("\n").rsplit("\n", 1)[-1].strip() == SPAWN_CLOSE


def parse_spawn(text: str) -> Spawn:
    """Parse the spawn block that ends ``text``; raise :class:`TraceFormatError` if malformed."""
    if not is_spawn(text):
        raise TraceFormatError("text does not end with a spawn request")
    body = text.rstrip("\n")
    opener = SPAWN_OPEN + "\n"
    cut = body.rfind(opener)
    if cut < 0 or (cut > 0 and body[cut - 1] != "\n"):
        raise TraceFormatError(f"spawn request without a {SPAWN_OPEN} line")
    block = body[cut + len(opener):].split("\n")[:-1]  # drop the closing line
    if not block:
        raise TraceFormatError("spawn request names no children")
    levels, node_ids = set(), []
    for k, line in enumerate(block):
        match = _SPAWN_LINE_RE.fullmatch(line.strip())
        if not match:
            raise TraceFormatError(f"bad spawn line {k}: {line[:80]!r}")
        index, level, node_id = match.groups()
        if _int(index) != k:
            raise TraceFormatError(f"spawn line {k} is numbered {index}")
        levels.add(_int(level))
        node_ids.append(node_id)
    if len(levels) != 1:
        raise TraceFormatError(f"spawn lines disagree on the level: {sorted(levels)}")
    return Spawn(before=body[:cut], level=levels.pop(), node_ids=tuple(node_ids))


def child_prompts(parent_text: str) -> list[str]:
    """The prompts of the children that the spawn at the end of ``parent_text`` asks for.

    A ``Token Budget`` prefix on the parent's first line is passed on to the children, as the
    reference's inference does; a ``Sub Call Budget`` is the root's alone.
    """
    spawn = parse_spawn(parent_text)
    table = node_table(spawn.before)
    prefix = leading_condition(parent_text)
    prefix = prefix if prefix.startswith(TOKEN_BUDGET) else ""
    prompts = []
    for node_id in spawn.node_ids:
        node = table.get(node_id)
        if node is None:
            raise TraceFormatError(f"spawn names node #{node_id}, which the parent never generated")
        prompts.append(node_prompt(node_id, node.target, node.nums, node.ops, prefix))
    return prompts


def join_text(parent_text: str, child_results: Sequence[str | None]) -> str:
    """The parent's text after the join: the spawn block replaced by the children's outcomes.

    ``child_results[i]`` is child i's :func:`extract_result`, or ``None`` if it found no solution.
    The parent continues decoding from the returned text (which ends with a newline).
    """
    spawn = parse_spawn(parent_text)
    if len(child_results) != len(spawn.node_ids):
        raise ValueError(f"{len(spawn.node_ids)} children were spawned but {len(child_results)} results given")
    parts = [spawn.before, JOIN_OPEN, "\n"]
    for i, (node_id, result) in enumerate(zip(spawn.node_ids, child_results)):
        if result is None:
            parts.append(f"<No Solution in Sub Search {i} at level {spawn.level} at Node #{node_id}>\n")
        else:
            parts.append(f"<Goal Reached in Sub Search {i} at level {spawn.level} at Node #{node_id}>\n{result}\n")
    parts.append(JOIN_CLOSE + "\n")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Results and verification
# ---------------------------------------------------------------------------------------------

def extract_result(text: str) -> str | None:
    """A thread's result: the text after its second-to-last "Goal Reached" (the reference's rule:
    the solution path it writes out after reaching the goal), or ``None``."""
    last = text.rfind(GOAL)
    second = text.rfind(GOAL, 0, last) if last > 0 else -1
    if second < 0:
        return None
    return text[second:].strip()[len(GOAL) + 1:]


def result_steps(result: str) -> tuple[list[Step], list[tuple[int, ...]], bool]:
    """The ``Exploring Operation`` steps of a result up to its first "Goal Reached" line, the numbers
    each claims to leave, and whether a "Goal Reached" line was found."""
    steps, stated = [], []
    for line in result.split("\n"):
        match = _EXPLORING_RE.search(line)
        if match:
            a, op, b, c, nums = match.groups()
            steps.append(Step(_int(a), op, _int(b), _int(c)))
            stated.append(parse_numbers(nums))
        if GOAL in line:
            return steps, stated, True
    return steps, stated, False


def verify_result(result: str | None, nums: Iterable[int], target: int) -> Verdict:
    """Strictly check a result (see :func:`extract_result`) against the problem's true numbers."""
    if result is None:
        return Verdict(False, "no result: the trace never wrote a solution path")
    try:
        steps, stated, reached = result_steps(result)
    except TraceFormatError as err:
        return Verdict(False, f"unreadable result: {err}")
    if not reached:
        return Verdict(False, "the result has no Goal Reached line")
    if not steps:
        return Verdict(False, "the result has no operations")
    return verify_steps(nums, target, steps, stated)


def verify_trace(text: str, nums: Iterable[int], target: int) -> Verdict:
    """Extract a thread's result and verify it."""
    return verify_result(extract_result(text), nums, target)


# ---------------------------------------------------------------------------------------------
# Token counting (the trace tokenizer's pieces; trace_trees measures whole trees with it)
# ---------------------------------------------------------------------------------------------

def split_tokens(text: str) -> list[str]:
    """The trace tokenizer's pieces: each fixed phrase, each digit and each other character."""
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    """``len(split_tokens(text))``, faster: every character is a token except inside a phrase, and
    scanning for phrases alone finds the same phrases (a single character never hides a phrase start)."""
    phrases = _PHRASE_RE.findall(text)
    return len(text) - sum(map(len, phrases)) + len(phrases)
