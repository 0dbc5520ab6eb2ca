"""Parsing time on hostile 1 MB lines: every parser of the trace language must stay linear.

Run:  python benchmarks/bench_parsing.py  [--megabytes 1] [--bound 1.0]   (or `make bench-parsing`)

Each case repeats an opener that never closes (``Current State: 1:[`` ...) on one line, the input that
made the list patterns rescan the rest of the line at every opener (quadratic: 5.8 s for 100 kB before
the fix). It prints the best of 3 times for 100 kB and for ``--megabytes`` MB, their ratio (about 10 when
linear, about 100 when quadratic) and exits 1 if any large input takes longer than ``--bound`` seconds.
``tests/test_trace_language.py`` checks the same ratio in the suite.
"""

from __future__ import annotations

import argparse
import sys
import time

from apr_mini import trace_language as tl

CASES = {
    "parse_state_line": (tl.parse_state_line, "Current State: 1:["),
    "node_table": (lambda t: tl.node_table("Moving to Node #0\nCurrent State: 12:[3, 4, 5], Operations: []\n" + t),
                   "Generated Node #0: 1:["),
    "verify_trace": (lambda t: tl.verify_trace("Goal Reached\n" + t + "\nGoal Reached", (3, 4, 5), 12),
                     "Exploring Operation: 1+1=2, Resulting Numbers: ["),
    "child_prompts": (lambda t: tl.child_prompts("Moving to Node #0\nCurrent State: 12:[3, 4, 5], Operations: []\n"
                                                 + t + tl.spawn_block(1, ["0,1"])),
                      "Generated Node #0,1: 12:[3, 4] Operation: 1+1=2\n"),
    "count_tokens": (tl.count_tokens, "Generated Node #0,1: 12:[3, 4] Operation: 1+1=2 "),
}


def best_seconds(fn, text: str, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        try:
            fn(text)
        except tl.TraceFormatError:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--bound", type=float, default=1.0, help="seconds allowed for the large input")
    args = parser.parse_args()
    print(f"| parser | 100 kB (s) | {args.megabytes:g} MB (s) | ratio |\n|---|---|---|---|")
    over = []
    for name, (fn, unit) in CASES.items():
        small = best_seconds(fn, unit * (100_000 // len(unit)))
        large = best_seconds(fn, unit * int(args.megabytes * 1_000_000 // len(unit)))
        print(f"| {name} | {small:.4f} | {large:.4f} | {large / max(small, 1e-9):.1f} |")
        if large > args.bound:
            over.append(name)
    if over:
        sys.exit(f"over the {args.bound} s bound: {', '.join(over)}")


if __name__ == "__main__":
    main()
