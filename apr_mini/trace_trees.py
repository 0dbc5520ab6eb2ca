"""Trace trees: the threads of one spawn/join search, their token timeline, metrics and SFT rows.

A trace tree is ``{"main_calls": [str, ...], "sub_calls": [[tree, ...], ...]}``: a thread's main
calls (call ``k > 0`` continues after the join of spawn ``k - 1``) and, per spawn, the child threads
it started. The solver writes trees (:mod:`apr_mini.demonstrations`), the engine runs them
(:mod:`apr_mini.engine`); this module measures them. Paper section 4 names the metrics: total tokens
(compute), the longest sequence (the context a model needs) and the critical path (latency, with
children running side by side). The text inside each thread is :mod:`apr_mini.trace_language`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from .trace_language import (TraceFormatError, count_tokens, extract_result, is_spawn, join_text, parse_prompt,
                             parse_spawn)


def iter_threads(tree: dict) -> Iterator[dict]:
    """Every thread of a tree (the tree itself, then each child's threads), depth first."""
    yield tree
    for spawn_children in tree.get("sub_calls", []):
        for child in spawn_children:
            yield from iter_threads(child)


def iter_sequences(tree: dict) -> Iterator[str]:
    """Every thread's every main call, depth first (the sequences the paper trains on)."""
    for thread in iter_threads(tree):
        yield from thread["main_calls"]


def thread_segments(tree: dict) -> list[tuple[str, str]]:
    """Each main call as ``(given, generated)``: what the thread was given (its prompt, or the
    join text) and what it wrote. ``given + generated`` is the main call's full text."""
    calls, subs = tree["main_calls"], tree.get("sub_calls", [])
    segments = []
    for k, text in enumerate(calls):
        if k == 0:
            given = _prompt_of(text)
        else:
            children = subs[k - 1] if k - 1 < len(subs) else []
            # a child the engine failed (context full, a limit) reads as "No Solution", as in the engine's join
            given = join_text(calls[k - 1], [None if c.get("failure") else extract_result(c["main_calls"][-1])
                                             for c in children])
            if not text.startswith(given):
                raise TraceFormatError(f"main call {k} does not continue from the join of spawn {k - 1}")
        segments.append((given, text[len(given):]))
    return segments


def _prompt_of(text: str) -> str:
    lines = text.split("\n", 2)
    if len(lines) < 2:
        raise TraceFormatError(f"thread too short to hold a prompt: {text[:80]!r}")
    parse_prompt(lines[0] + "\n" + lines[1])
    return lines[0] + "\n" + lines[1]


@dataclass(frozen=True)
class Segment:
    """One main call of one thread, placed in token time (see :func:`timeline`)."""

    thread: str      # "root", "root/0.2" (spawn 0's child 2), "root/0.2/1.0", ...
    call: int        # index into that thread's main_calls
    depth: int       # spawn depth of the thread: 0 for the root
    start: int       # token time at which the call's new tokens start ...
    end: int         # ... and end
    tokens: int      # the whole main call's length (the context it needs)
    text: str
    outcome: str     # "spawn", "solved" or "no solution"


def timeline(tree: dict, count: Callable[[str], int] = count_tokens, *, thread: str = "root", depth: int = 0,
             start: int = 0) -> list[Segment]:
    """Every main call of every thread (depth first), timed in tokens as if each token took one step
    and parallel children ran side by side. A call ``k > 0`` repeats the text before its spawn, so
    only its new tokens (join text and continuation) take time, starting when the slowest child of
    spawn ``k - 1`` has finished."""
    calls, subs = tree["main_calls"], tree.get("sub_calls", [])
    segments: list[Segment] = []
    clock, kept_chars, kept_tokens, tokens = start, 0, 0, 0  # kept_*: what this call repeats of the last
    for k, text in enumerate(calls):
        if k:
            before = parse_spawn(calls[k - 1]).before
            if not text.startswith(before):
                raise TraceFormatError(f"{thread}: main call {k} does not continue from its spawn's text")
            kept_tokens = tokens - count(calls[k - 1][len(before):])
            kept_chars = len(before)
        new = count(text[kept_chars:])
        tokens = kept_tokens + new
        if is_spawn(text):
            outcome = "spawn"
        else:
            outcome = "solved" if extract_result(text) is not None else "no solution"
        segments.append(Segment(thread, k, depth, clock, clock + new, tokens, text, outcome))
        clock += new
        if k < len(subs):
            ends = [clock]
            for i, child in enumerate(subs[k]):
                child_segments = timeline(child, count, thread=f"{thread}/{k}.{i}", depth=depth + 1, start=clock)
                segments.extend(child_segments)
                ends.append(max(s.end for s in child_segments))
            clock = max(ends)
    return segments


@dataclass(frozen=True)
class TreeStats:
    total_tokens: int       # every token any thread processed (a call's repeated prefix counted once)
    longest_sequence: int   # the longest single sequence: the context window actually needed
    critical_path: int      # the longest chain of tokens that must be processed one after another
    n_threads: int          # root + every child
    n_spawns: int
    spawn_depth: int        # 0 for a trace without spawns

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def tree_stats(tree: dict, count: Callable[[str], int] = count_tokens) -> TreeStats:
    """Measure a trace tree in tokens (``count`` counts one text's tokens) from its :func:`timeline`:
    the critical path is when the root's last call ends, since children run in parallel."""
    segments = timeline(tree, count)
    return TreeStats(
        total_tokens=sum(s.end - s.start for s in segments),
        longest_sequence=max(s.tokens for s in segments),
        critical_path=max(s.end for s in segments),
        n_threads=len({s.thread for s in segments}),
        n_spawns=sum(s.outcome == "spawn" for s in segments),
        spawn_depth=max(s.depth for s in segments),
    )


def sft_rows(tree: dict) -> list[dict]:
    """One training row per main call of every thread: ``prompt`` is what the engine gives the
    model (a prompt or a join), ``completion`` what the model must write."""
    return [{"prompt": given, "completion": generated}
            for thread in iter_threads(tree) for given, generated in thread_segments(thread)]
