"""One GRPO step of apr-mini's loop against one step of TRL's ``GRPOTrainer``, back to back.

Run:  python benchmarks/bench_grpo.py [--checkpoint data/cpu-sosp] [--problems 8] [--generations 8]
                                      [--threads 2] [--repeat 3]

Both sides train the same SoS+ model (one sequence per episode, where ``GRPOTrainer`` is a peer) on
the same training problems with the same group size, reward (the strict verifier) and loss settings.
Ours samples its rollouts on the continuous-batching engine (:mod:`apr_mini.engine`); TRL's with its
default generation (``model.generate`` on the whole batch). Each side runs in its own process, so
its peak memory (max RSS) is its own; each of ``--repeat`` rounds runs both back to back (this VM's
speed drifts by tens of percent) and the round with the median ratio is printed, with our step split
into rollout and training time.
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


def run_ours(checkpoint: str, problems, generations: int) -> dict:
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
    point, _ = grpo.grpo_step(model, tokenizer, optimizer, problems, config, kind="sosp", step=1)
    return {"step_s": time.perf_counter() - start, "rollout_s": point["rollout_s"], "train_s": point["train_s"],
            "trees": len(problems) * generations}


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
    problems = load_problems(ROOT / "data" / "countdown-cpu" / "problems_train.jsonl", n)
    result = (run_ours if side == "ours" else run_trl)(checkpoint, problems, generations)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--checkpoint", args.checkpoint, "--problems",
                          str(args.problems), "--generations", str(args.generations), "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "data" / "cpu-sosp"))
    parser.add_argument("--problems", type=int, default=8, help="problems per step")
    parser.add_argument("--generations", type=int, default=8, help="trees per problem (the group)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.checkpoint, args.problems, args.generations, args.threads)
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


if __name__ == "__main__":
    main()
