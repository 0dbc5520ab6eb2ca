"""One GRPO step of apr-mini's loop against one step of TRL's ``GRPOTrainer``, back to back.

Run:  python benchmarks/bench_grpo.py [--checkpoint data/cpu-sosp] [--problems 8] [--generations 8]
                                      [--threads 2] [--repeat 3]
      python benchmarks/bench_grpo.py --deep [--checkpoint data/cpu4-apr] [--repeat 3]

Both sides train the same SoS+ model (one sequence per episode, where ``GRPOTrainer`` is a peer) on
the same training problems with the same group size, reward (the strict verifier) and loss settings.
Ours samples its rollouts on the continuous-batching engine (:mod:`apr_mini.engine`); TRL's with its
default generation (``model.generate`` on the whole batch). Each side runs in its own process, so
its peak memory (max RSS) is its own; each of ``--repeat`` rounds runs both back to back (this VM's
speed drifts by tens of percent) and the round with the median ratio is printed, with our step split
into rollout and training time.

``--deep``: one APR step of apr-mini's loop on the deep task (the 4-number model, its training
problems), at one thread and at two, back to back in each round: rollout and training time with
their tokens per second (tree tokens sampled, completion tokens trained), so a reader sees what the
second core buys each half of a step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_ours(checkpoint: str, problems, generations: int, kind: str = "sosp") -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from apr_mini import grpo
    from apr_mini.config import GRPOConfig
    from apr_mini.packing import use_packed_attention
    from apr_mini.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    use_packed_attention(model)
    tokenizer = load_tokenizer(checkpoint)
    config = GRPOConfig(learning_rate=1e-4, num_generations=generations, problems_per_step=len(problems), beta=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    start = time.perf_counter()
    point, _ = grpo.grpo_step(model, tokenizer, optimizer, problems, config, kind=kind, step=1)
    trees = len(problems) * generations
    return {"step_s": time.perf_counter() - start, "rollout_s": point["rollout_s"], "train_s": point["train_s"],
            "trees": trees, "tree_tokens": point["total_tokens"] * trees, "trained_tokens": point["trained_tokens"]}


def run_trl(checkpoint: str, problems, generations: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from apr_mini import trace_language as tl
    from apr_mini.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    rows = [{"prompt": tl.root_prompt(p.target, p.nums), "nums": list(p.nums), "target": p.target} for p in problems]
    longest_prompt = max(len(tokenizer(r["prompt"])["input_ids"]) for r in rows)

    def verified(prompts, completions, nums, target, **kwargs):
        return [float(bool(tl.verify_trace(p + c, n, t))) for p, c, n, t in zip(prompts, completions, nums, target)]

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, num_generations=generations,
                          per_device_train_batch_size=len(rows) * generations, gradient_accumulation_steps=1,
                          max_steps=1, learning_rate=1e-4, beta=0.0, temperature=1.0,
                          max_completion_length=model.config.max_position_embeddings - longest_prompt,
                          report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True,
                          activation_checkpointing=False)
        trainer = GRPOTrainer(model=model, reward_funcs=verified, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
    return {"step_s": time.perf_counter() - start, "trees": len(rows) * generations}


def child(side: str, checkpoint: str, n: int, generations: int, threads: int) -> None:
    import torch

    from apr_mini.data import load_problems

    torch.set_num_threads(threads)
    task = "countdown-cpu4" if side == "deep" else "countdown-cpu"
    problems = load_problems(ROOT / "data" / task / "problems_train.jsonl", n)
    if side == "deep":
        result = run_ours(checkpoint, problems, generations, kind="apr")
    else:
        result = (run_ours if side == "ours" else run_trl)(checkpoint, problems, generations)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, args, threads: int | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--checkpoint", args.checkpoint, "--problems",
                          str(args.problems), "--generations", str(args.generations),
                          "--threads", str(threads or args.threads)],
                         capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="default: data/cpu-sosp (data/cpu4-apr with --deep)")
    parser.add_argument("--problems", type=int, default=8, help="problems per step")
    parser.add_argument("--generations", type=int, default=8, help="trees per problem (the group)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deep", action="store_true", help="an APR step on the deep task, at 1 and 2 threads")
    parser.add_argument("--side", choices=["ours", "trl", "deep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.checkpoint = args.checkpoint or str(ROOT / "data" / ("cpu4-apr" if args.deep else "cpu-sosp"))
    if args.side:
        child(args.side, args.checkpoint, args.problems, args.generations, args.threads)
        return
    if args.deep:
        deep(args)
        return
    rounds = []
    for r in range(args.repeat):
        ours, trl = measure("ours", args), measure("trl", args)
        rounds.append((trl["step_s"] / ours["step_s"], ours, trl))
        print(f"round {r + 1}: ours {ours['step_s']:.1f} s, TRL {trl['step_s']:.1f} s, {rounds[-1][0]:.2f}x", flush=True)
    ratio, ours, trl = sorted(rounds, key=lambda x: x[0])[len(rounds) // 2]
    print(f"\nOne GRPO step, {args.problems} problems x {args.generations} SoS+ trees, {Path(args.checkpoint).name}, "
          f"{args.threads} threads (median of {args.repeat} back-to-back rounds)")
    print("| side | step (s) | rollout (s) | training (s) | peak memory (MB) |\n|---|---|---|---|---|")
    print(f"| apr-mini (engine rollouts) | {ours['step_s']:.1f} | {ours['rollout_s']:.1f} | {ours['train_s']:.1f} | "
          f"{ours['peak_rss_mb']:.0f} |")
    print(f"| TRL GRPOTrainer (generate) | {trl['step_s']:.1f} | | | {trl['peak_rss_mb']:.0f} |")
    print(f"speed-up: {ratio:.2f}x (rounds: {', '.join(f'{r[0]:.2f}x' for r in rounds)}; "
          f"median {statistics.median(r[0] for r in rounds):.2f}x)")


def deep(args) -> None:
    """One deep APR step at 1 and at 2 threads, alternating within each round; medians printed."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(args.repeat):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            runs[threads].append(measure("deep", args, threads))
        print(f"round {r + 1}: " + ", ".join(f"{t} thread(s) {runs[t][-1]['step_s']:.1f} s" for t in (1, 2)), flush=True)
    print(f"\nOne APR GRPO step on the deep task, {args.problems} problems x {args.generations} trees, "
          f"{Path(args.checkpoint).name} (median of {args.repeat} back-to-back rounds)")
    print("| threads | step (s) | rollout (s) | tree tokens/s | training (s) | trained tokens/s | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|")
    for threads, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"| {threads} | {med['step_s']:.1f} | {med['rollout_s']:.1f} | {med['tree_tokens'] / max(med['rollout_s'], 1e-3):,.0f} | "
              f"{med['train_s']:.1f} | {med['trained_tokens'] / max(med['train_s'], 1e-3):,.0f} | {med['peak_rss_mb']:.0f} |")
    pairs = [one["step_s"] / two["step_s"] for one, two in zip(runs[1], runs[2])]
    print(f"two threads against one, per round: {', '.join(f'{p:.2f}x' for p in pairs)}")


if __name__ == "__main__":
    main()
