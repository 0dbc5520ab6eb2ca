"""SFT throughput: padding-free packed batches vs plain padded batches, in trained tokens per second.

Run:  python benchmarks/bench_sft.py [--data runs/cpu/data] [--model cpu] [--kind sosp|apr] [--steps 40] [--threads 2]
                                     [--repeat 3]

Both modes train the same model on the same rows (SoS+ or APR) with TRL's SFTTrainer for ``--steps`` steps
(after a few warm-up steps) and count non-padding tokens. Packed: blocks of ``context`` tokens
(best-fit decreasing, per-row position ids, attention row by row: `apr_mini.packing.use_packed_attention`). Padded: rows padded to the
longest in the batch, as many rows per batch as give the same tokens per step on average. Each of
``--repeat`` rounds times both back to back; the round with the median speed-up is printed.
Make the data first: ``python -m apr_mini data --profile cpu``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from apr_mini.models import MODEL_PRESETS, build_model
from apr_mini.packing import use_packed_attention
from apr_mini.sft import SFTRun, load_rows, sft_config, tokenize_rows
from apr_mini.tokenizer import build_tokenizer

WARMUP = 5


class Clock(TrainerCallback):
    def __init__(self):
        self.start_tokens = self.start_time = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == WARMUP:
            self.start_tokens, self.start_time = state.num_input_tokens_seen, time.perf_counter()
        self.end_tokens, self.end_time = state.num_input_tokens_seen, time.perf_counter()

    def rate(self) -> float:
        return (self.end_tokens - self.start_tokens) / (self.end_time - self.start_time)


def measure(dataset, tokenizer, model_name: str, *, packing: bool, batch_size: int, grad_accum: int,
            steps: int) -> float:
    from trl import SFTTrainer

    run = SFTRun(model=model_name, batch_size=batch_size, grad_accum=grad_accum, packing=packing, eval_every=0,
                 save_every=10**9)
    context = MODEL_PRESETS[model_name].context
    args = sft_config(run, Path("/tmp/apr-mini-bench-sft"), context, WARMUP + steps)
    args.disable_tqdm, args.logging_steps = True, 10**9
    clock = Clock()
    model = build_model(model_name, tokenizer)
    if packing:
        use_packed_attention(model)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    return clock.rate()


def padding_share(dataset, rows_per_batch: int) -> float:
    """The share of padding in batches of ``rows_per_batch`` consecutive (shuffled) rows, each padded
    to its longest row: removing it is all that padding-free batches can save by themselves."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    batches = [lengths[i:i + rows_per_batch] for i in range(0, len(lengths) - rows_per_batch + 1, rows_per_batch)]
    return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="runs/cpu/data")
    parser.add_argument("--model", default="cpu")
    parser.add_argument("--kind", choices=["sosp", "apr"], default="sosp", help="which SFT rows")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (packed, then padded); the median is shown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    context = MODEL_PRESETS[args.model].context
    dataset, report = tokenize_rows(load_rows(args.data, args.kind), tokenizer, context)
    mean_row = report["tokens_per_epoch"] / report["kept"]
    padded_rows = max(1, round(2 * context / mean_row))
    # the machine's speed drifts from minute to minute: time both back to back, report the median round
    rounds = sorted(((measure(dataset, tokenizer, args.model, packing=True, batch_size=1, grad_accum=2,
                              steps=args.steps),
                      measure(dataset, tokenizer, args.model, packing=False, batch_size=padded_rows, grad_accum=1,
                              steps=args.steps)) for _ in range(args.repeat)), key=lambda r: r[0] / r[1])
    packed, padded = rounds[len(rounds) // 2]
    print(f"SFT throughput, model {args.model!r}, {args.threads} threads, {args.kind} rows of {mean_row:.0f} tokens on average, "
          f"{args.steps} steps")
    print("| batches | rows per step | trained tokens/s |")
    print("|---|---|---|")
    print(f"| packed, padding-free (2 micro-batches of {context} tokens) | ~{2 * context / mean_row:.1f} | {packed:,.0f} |")
    print(f"| padded to the longest row | {padded_rows} | {padded:,.0f} |")
    share = padding_share(dataset, padded_rows)
    print(f"padding in the padded batches: {share:.0%} (removing it alone would give {1 / (1 - share):.2f}x)")
    print(f"speed-up of packing: {packed / padded:.2f}x (median of {len(rounds)} rounds: "
          f"{', '.join(f'{a / b:.2f}x' for a, b in rounds)})")


if __name__ == "__main__":
    main()
