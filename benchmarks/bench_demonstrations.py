"""Demonstration throughput on one core: problems/s, SoS+ traces/s, APR traces/s.

Run:  python benchmarks/bench_demonstrations.py  [--n 2000] [--repeats 3]   (or `make bench`)

Setting (the paper's task and the reference's generation scripts' defaults): 4 numbers in 1..99,
targets 10..100, mult heuristic; SoS+ beam drawn from 1..5 with dive probability 0.5; APR beam from
1..6, children's beam from beam..10, spawn probability 0.9. One process (one core), best of
``--repeats`` runs. "with tokens" adds the work the data CLI does per row: counting a SoS+ trace's
tokens, or walking an APR tree for its total / longest / critical-path token counts.

The reference column is what the public reference implementation did on one core of this machine
class (from ../shared/docs/measured-facts.md, without token counting); it is quoted, not re-run here.
"""

from __future__ import annotations

import argparse
import random
import time

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt
from apr_mini.config import TaskConfig
from apr_mini.countdown import problem_chunk
from apr_mini.demonstrations import apr_tree, sosp_trace

REFERENCE_PER_SECOND = {"problems": 227, "SoS+ traces": 2000, "APR traces": 750}
PAPER_TASK = TaskConfig(n_numbers=4, min_number=1, max_number=99, min_target=10, max_target=100)


def make_problems(n: int, seed: int):
    return problem_chunk(PAPER_TASK, seed, "bench", 0, n)


def make_sosp(problems, seed: int, count: bool):
    rng = random.Random(seed)
    for problem in problems:
        trace = sosp_trace(problem, beam=rng.randint(1, 5), dive_probability=0.5, rng=rng)
        if count:
            tl.count_tokens(trace)


def make_apr(problems, seed: int, count: bool):
    rng = random.Random(seed)
    for problem in problems:
        beam = rng.randint(1, 6)
        tree = apr_tree(problem, beam=beam, sub_beam=rng.randint(beam, 10), spawn_probability=0.9, rng=rng)
        if count:
            tt.tree_stats(tree)


def best_rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="problems per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    problems = make_problems(args.n, args.seed)
    rates = {
        "problems": (best_rate(lambda: make_problems(args.n, args.seed + 1), args.n, args.repeats), None),
        "SoS+ traces": tuple(best_rate(lambda c=c: make_sosp(problems, args.seed, c), args.n, args.repeats)
                             for c in (False, True)),
        "APR traces": tuple(best_rate(lambda c=c: make_apr(problems, args.seed, c), args.n, args.repeats)
                            for c in (False, True)),
    }
    print(f"Demonstration throughput, one core, {args.n} problems (4 numbers in 1..99, targets 10..100), "
          f"best of {args.repeats}")
    header = f"| {'what':<12} | {'reference /s':>12} | {'apr-mini /s':>11} | {'speed-up':>8} | {'with tokens /s':>14} |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for what, (plain, counted) in rates.items():
        reference = REFERENCE_PER_SECOND[what]
        counted_text = f"{counted:,.0f}" if counted else "n/a"
        print(f"| {what:<12} | {reference:>12,} | {plain:>11,.0f} | {plain / reference:>7.1f}x | {counted_text:>14} |")


if __name__ == "__main__":
    main()
