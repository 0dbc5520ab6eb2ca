"""Spawn/join engine benchmarks on the shipped cpu checkpoints (in-process transformers backend).

Run:  python benchmarks/bench_engine.py [--apr data/cpu-apr] [--sosp data/cpu-sosp] [--problems 64]
                                        [--compare 200] [--samples 8] [--threads 2] [--repeat 3] [--alone 16]

Prints four Markdown tables, all on the first ``--problems`` validation problems (greedy):

1. batching: every thread of every problem in one continuous batch vs one request at a time
   (``max_batch=1``, the first ``--alone`` problems one after another), in decoded tokens per
   second; both are timed back to back in each of ``--repeat`` rounds and the median round is shown;
2. efficiency: each problem run alone (its children still batched): wall time divided by
   critical-path tokens x the single-stream time per token measured in (1);
3. joins: continuing from the parent's cached prefix vs prefilling the joined text again;
4. APR vs SoS+ on ``--compare`` problems: accuracy, tokens, longest sequence, critical path, and the
   per-problem latency of problems run one at a time; plus SoS+ pass@N and majority@N over N samples
   at temperature 1 (the paper compares APR with SoS+ pass@8 at equal compute).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from apr_mini import trace_trees as tt
from apr_mini.backends import TransformersBackend
from apr_mini.engine import Limits, run_problems
from apr_mini.data import load_problems
from apr_mini.inference import EvalSettings, run_eval, summarize


def load(checkpoint: str):
    from transformers import AutoModelForCausalLM

    from apr_mini.tokenizer import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(checkpoint), load_tokenizer(checkpoint)


def timed(model, tokenizer, problems, *, limits=Limits(), **options):
    """Records (with sample 0, for summarize), wall seconds, and the backend used."""
    max_live = options.pop("max_live", 64)
    backend = TransformersBackend(model, tokenizer, **options)
    start = time.perf_counter()
    records = run_problems(backend, problems, limits=limits, max_live=max_live)
    for record in records:
        record["sample"] = 0
    return records, time.perf_counter() - start, backend


def decoded(records) -> int:
    return sum(r["metrics"]["decode_tokens"] for r in records)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apr", default="data/cpu-apr")
    parser.add_argument("--sosp", default="data/cpu-sosp")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--compare", type=int, default=200)
    parser.add_argument("--samples", type=int, default=8, help="SoS+ samples for pass@N and majority@N (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of table 1; the median round is reported")
    parser.add_argument("--alone", type=int, default=16, help="problems decoded one request at a time in table 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load(args.apr)
    problems = load_problems(Path(args.apr) / "problems_val.jsonl", args.problems)
    timed(model, tokenizer, problems[:2])  # warm-up

    # Timings on a shared machine drift by tens of percent from one minute to the next, so each round
    # times both modes back to back and the round with the median speed-up is reported.
    rounds = []
    for _ in range(args.repeat):
        batched, batched_s, backend = timed(model, tokenizer, problems)
        single, single_s, _ = timed(model, tokenizer, problems[:args.alone], max_batch=1, max_live=1)
        rounds.append({"batched": decoded(batched) / batched_s, "single": decoded(single) / single_s,
                       "batched_s": batched_s, "single_s": single_s, "single_tokens": decoded(single),
                       "rows": decoded(batched) / backend.forward_calls})
        rounds[-1]["speedup"] = rounds[-1]["batched"] / rounds[-1]["single"]
    rounds.sort(key=lambda r: r["speedup"])
    median = rounds[len(rounds) // 2]
    per_token = 1 / median["single"]
    print(f"\n## 1. Batching ({len(problems)} problems, {args.apr}, {args.threads} threads; "
          f"median of {len(rounds)} rounds)\n")
    print(table(["mode", "problems", "wall s", "decoded tokens", "rows per step", "tokens/s", "speed-up"], [
        ["one request at a time", args.alone, round(median["single_s"], 1), median["single_tokens"], 1,
         round(median["single"]), "1.0x"],
        ["continuous batch (up to 64 rows)", len(problems), round(median["batched_s"], 1), decoded(batched),
         round(median["rows"], 1), round(median["batched"]),
         f"{median['speedup']:.1f}x (rounds: {', '.join(format(r['speedup'], '.1f') + 'x' for r in rounds)})"],
    ]))

    ratios = []
    for problem in problems:
        [record], seconds, _ = timed(model, tokenizer, [problem], max_live=1)
        ratios.append(seconds / (record["metrics"]["critical_path"] * per_token))
    print(f"\n## 2. Efficiency: wall / (critical-path tokens x {per_token * 1000:.2f} ms single-stream per token)\n")
    print(table(["problems", "median", "mean", "max"], [[len(ratios), round(statistics.median(ratios), 2),
                                                        round(statistics.mean(ratios), 2), round(max(ratios), 2)]]))

    rows = []
    for join in ("re-prefill", "prefix-cache"):
        records, seconds, _ = timed(model, tokenizer, problems, join=join)
        joins = sum(len(tree["calls"]) - 1 for tree in _threads(records))
        prefill = sum(r["metrics"]["prefill_tokens"] for r in records)
        rows.append([join, joins, prefill, round(_join_prefill(records) / max(joins, 1), 1), round(seconds, 1)])
    print(f"\n## 3. Joins ({len(problems)} problems, batched)\n")
    print(table(["join", "joins", "prefilled tokens (all calls)", "prefilled tokens per join", "wall s"], rows))

    rows = []
    for name, checkpoint, method in (("SoS+", args.sosp, "sosp"), ("APR", args.apr, "apr")):
        model, tokenizer = load(checkpoint)
        compare = load_problems(Path(checkpoint) / "problems_val.jsonl", args.compare)
        limits = Limits(max_depth=0) if method == "sosp" else Limits()
        records, seconds, _ = timed(model, tokenizer, compare, limits=limits)
        alone = [timed(model, tokenizer, [p], limits=limits, max_live=1)[1] for p in compare[:args.problems]]
        s = summarize(records)
        rows.append([f"{name} greedy", len(compare), s["accuracy"], s["total_tokens"], s["longest_sequence"],
                     s["critical_path"], s["children"], round(statistics.mean(alone), 3), round(seconds, 1)])
        if method == "sosp" and args.samples > 1:
            settings = EvalSettings(method="sosp", samples=args.samples, temperature=1.0)
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                sampled = run_eval(TransformersBackend(model, tokenizer), compare, Path(folder) / "sosp.jsonl",
                                   settings, progress=False)
                seconds = time.perf_counter() - start
            s = summarize(sampled)
            for label, key in ((f"pass@{args.samples}", "pass_at_n"), (f"majority@{args.samples}", "majority")):
                rows.append([f"SoS+ {label} (T=1)", len(compare), s[key], s["total_tokens"], s["longest_sequence"],
                             s["critical_path"], 0, "", round(seconds, 1)])
    print(f"\n## 4. APR vs SoS+ (latency: the first {args.problems} problems run one at a time; "
          f"tokens of N samples are summed)\n")
    print(table(["method", "problems", "accuracy", "total tokens", "longest sequence", "critical path", "children",
                 "latency s", "batched wall s"], rows))


def _threads(records):
    """Every thread's tree of every record."""
    for record in records:
        yield from tt.iter_threads(record["tree"])


def _join_prefill(records) -> int:
    """Tokens prefilled for the calls that continue a parent after a join."""
    return sum(call["prompt_tokens"] - call["cached_tokens"] for tree in _threads(records)
               for call in tree["calls"][1:])


if __name__ == "__main__":
    main()
