"""SFT on demonstrations with TRL's ``SFTTrainer``; its evaluation is :func:`apr_mini.inference.evaluate`.

Paper section 4.2 (SFT on solver trajectories). The reference never published its preprocessing;
apr-mini's, seeded and applied identically to SoS+ and APR:

- **rows**: SoS+ has one row per demonstration (root prompt -> the whole trace); APR has one row per
  main call of every thread (:func:`apr_mini.trace_trees.sft_rows`), as the paper trains.
- **kept**: every demonstration, solved or not (failed searches teach the model to finish with
  ``No solution found.``); ``keep="solved"`` keeps only trees/traces whose result verifies.
- **over-long rows** (BOS + prompt + completion + EOS beyond the context window) are dropped by
  default (``overflow="drop"``, the ``cpu`` models): a dropped row never teaches a search that does
  not fit. The reference instead cuts them on the right at its window (``truncation_side='right'``,
  ``max_length=4096`` in its ``supervised-jax`` trainer; its SoS+ solver has no search budget), which
  ``overflow="truncate"`` follows (the deep ``cpu4`` task, where 61% of SoS+ traces are longer than
  the window and dropping them would train SoS+ only on the easy problems). Either share is reported;
  it is where SoS+ pays for its long sequences.
- **loss** on the completion only: the prompt, or the join text, is written by the engine.
- **hygiene**: rows come from training problems only; validation problems are disjoint by sorted
  numbers + target (:func:`apr_mini.data.make_splits`).

Batches are padding-free: TRL packs rows into ``context``-token blocks (best-fit decreasing) with
per-row position ids, so no compute is spent on padding and no token attends across rows. TRL
flattens a micro-batch into one sequence, so a micro-batch holds one block and gradient accumulation
makes up the batch. Attention inside a block runs row by row
(:func:`apr_mini.packing.use_packed_attention`, shared with GRPO): plain
SDPA would apply a block-diagonal mask to the whole block and so compute every pair of its positions.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import UserFacingError
from .countdown import Problem
from .data import read_jsonl
from .inference import evaluate, evaluate_checkpoint
from .packing import use_packed_attention


@dataclass(frozen=True)
class SFTRun:
    """One training run. ``max_tokens`` is the budget in trained (non-padding) tokens."""

    kind: str = "sosp"                  # "sosp" or "apr"
    model: str = "cpu"                  # a key of apr_mini.models.MODEL_PRESETS
    max_tokens: int = 20_000_000
    batch_size: int = 1                 # packed blocks of `context` tokens per micro-batch
    grad_accum: int = 2                 # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_ratio: float = 0.02
    weight_decay: float = 0.1
    keep: str = "all"                   # "all" or "solved"
    packing: bool = True
    seed: int = 0
    eval_every: int = 500               # steps between learning-curve points (0: never)
    eval_problems: int = 100
    save_every: int = 250
    threads: int = 0                    # torch threads (0: leave as is)
    numbers: str = "digits"             # the tokenizer's number scheme (apr_mini.tokenizer.NUMBER_SCHEMES)
    init: str | None = None             # continue from this checkpoint's weights instead of a fresh model
    overflow: str = "drop"              # rows longer than the window: "drop" them or "truncate" (reference)

    def __post_init__(self):
        if self.overflow not in ("drop", "truncate"):
            raise ValueError(f"overflow must be 'drop' or 'truncate', not {self.overflow!r}")


def load_rows(data_dir: str | Path, kind: str, keep: str = "all") -> list[dict]:
    if kind not in ("sosp", "apr"):
        raise ValueError(f"kind must be 'sosp' or 'apr', got {kind!r}")
    path = Path(data_dir) / f"sft_{kind}_train.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: make it with `python -m apr_mini data --out {data_dir}`")
    rows = read_jsonl(path)
    return [r for r in rows if keep == "all" or r["solved"]]


TOKENIZE_CHUNK = 2048  # rows per tokenizer call: one call over the deep task's 59,561 APR rows peaked at 7.7 GB


def _token_ids(tokenizer, texts: list[str]):
    """Each text's ids, tokenized a chunk at a time: a fast tokenizer's per-row encodings (tokens,
    offsets, masks) cost many times the ids, and only the ids are kept."""
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        yield from tokenizer(texts[start:start + TOKENIZE_CHUNK])["input_ids"]


def tokenize_rows(rows: list[dict], tokenizer, context: int, seed: int = 0, overflow: str = "drop"):
    """Pre-tokenized rows (``input_ids``, ``completion_mask``) that fit the context, shuffled; and a
    report of what was dropped, or cut to the window with ``overflow="truncate"`` (no EOS then: the
    search did not end inside the window). The rows are built as flat Arrow arrays (int32 ids, int8
    mask): as Python lists the deep task's 39M APR tokens took 3.7 GB on the way to the dataset."""
    from array import array

    import numpy as np
    import pyarrow as pa
    from datasets import Dataset

    ids, ends, prompt_lengths, dropped = array("i"), [0], [], 0
    for prompt, full in zip(_token_ids(tokenizer, [r["prompt"] for r in rows]),
                            _token_ids(tokenizer, [r["prompt"] + r["completion"] for r in rows])):
        if full[:len(prompt)] != prompt:
            raise ValueError("tokenization is not stable at the prompt/completion boundary")
        full.append(tokenizer.eos_token_id)
        if len(full) > context:
            dropped += 1
            if overflow == "drop" or len(prompt) >= context:
                continue
            del full[context:]
        ids.extend(full)
        ends.append(len(ids))
        prompt_lengths.append(len(prompt))
    order = list(range(len(prompt_lengths)))
    random.Random(seed).shuffle(order)  # the same permutation as shuffling the rows themselves
    flat, ends = np.frombuffer(ids, dtype=np.int32), np.asarray(ends)
    lengths = np.diff(ends)[order]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    shuffled = np.concatenate([flat[ends[i]:ends[i + 1]] for i in order]) if order else flat[:0]
    mask = np.ones(len(shuffled), dtype=np.int8)
    for start, i in zip(offsets, order):
        mask[start:start + prompt_lengths[i]] = 0
    table = pa.table({"input_ids": pa.ListArray.from_arrays(offsets, shuffled),
                      "completion_mask": pa.ListArray.from_arrays(offsets, mask)})
    over = "dropped_over_context" if overflow == "drop" else "truncated_over_context"
    report = {"rows": len(rows), "kept": len(order), over: dropped, "tokens_per_epoch": int(offsets[-1])}
    return Dataset(table), report


def row_lengths(rows: list[dict], tokenizer) -> list[int]:
    """Each row's length as trained: BOS + prompt + completion + EOS."""
    return [len(ids) + 1 for ids in _token_ids(tokenizer, [r["prompt"] + r["completion"] for r in rows])]


def overflow_shares(lengths: list[int], contexts) -> dict[int, float]:
    """For each context window, the share of ``lengths`` longer than it."""
    return {c: sum(n > c for n in lengths) / len(lengths) for c in contexts}


def overflow_report(data_dir: str | Path, contexts=(512, 640, 768, 1024), tokenizer=None) -> dict:
    """For each context window, the share of SoS+ and of APR training rows that :func:`tokenize_rows`
    would drop as too long (BOS + prompt + completion + EOS). The paper's context-window effect needs
    a task where a real share of SoS+ rows overflow while APR's threads still fit."""
    from .tokenizer import build_tokenizer

    tokenizer = tokenizer or build_tokenizer()
    report = {}
    for kind in ("sosp", "apr"):
        rows = load_rows(data_dir, kind)
        lengths = row_lengths(rows, tokenizer)
        report[kind] = {"rows": len(rows), "max_tokens": max(lengths),
                        "over": overflow_shares(lengths, contexts)}
    return report


def warmup_steps(run: SFTRun, max_steps: int) -> int:
    return max(1, int(run.warmup_ratio * max_steps))


def data_parallel_accumulation(run: SFTRun) -> tuple[int, int]:
    """``(processes, gradient accumulation per process)``: under DDP (``accelerate launch --multi_gpu``,
    ``torchrun``) each of ``WORLD_SIZE`` processes accumulates a share of ``run.grad_accum``, so the
    global batch, and so the recipe, stays the same as on one process."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if run.grad_accum % world:
        raise UserFacingError(f"{world} processes cannot share a gradient accumulation of {run.grad_accum}: "
                              "use a process count that divides it")
    return world, run.grad_accum // world


def sft_config(run: SFTRun, out_dir: Path, context: int, max_steps: int):
    """TRL's config for a CPU- and GPU-friendly run (no bf16 or gradient checkpointing on CPU)."""
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and torch.cuda.is_bf16_supported()  # a T4 has no bf16: fp16 mixed precision there
    return SFTConfig(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=run.batch_size,
        gradient_accumulation_steps=data_parallel_accumulation(run)[1],
        learning_rate=run.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": run.min_lr_ratio}, warmup_steps=warmup_steps(run, max_steps),
        weight_decay=run.weight_decay, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
        bf16=bf16, fp16=on_gpu and not bf16, activation_checkpointing=False, max_length=context, packing=run.packing,
        packing_strategy="bfd", completion_only_loss=True, logging_steps=25, save_steps=run.save_every,
        save_total_limit=2, report_to="none", seed=run.seed, data_seed=run.seed, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding", use_cpu=not on_gpu, disable_tqdm=False,
    )


def warm_start(checkpoint: str | Path, preset: str, tokenizer):
    """The weights of ``checkpoint`` as a ``preset`` model: same shape and tokenizer, and a window at
    most the preset's. A longer window is only a config change (RoPE has no position weights), so
    the 3-number ``cpu`` models start the 4-number ``cpu4`` task (a curriculum; the model has never
    seen positions past its old window, which the deep task's learning curves measure)."""
    from .models import MODEL_PRESETS, load_model

    model, want = load_model(checkpoint), MODEL_PRESETS[preset]
    got = model.config
    same_shape = (got.vocab_size, got.hidden_size, got.num_hidden_layers, got.num_attention_heads,
                  got.intermediate_size) == (len(tokenizer), want.hidden, want.n_layers, want.n_heads, want.ffn)
    if not same_shape or got.max_position_embeddings > want.context:
        raise UserFacingError(f"{checkpoint} is not a {preset!r}-shaped model (window at most {want.context}) "
                              "with this tokenizer")
    model.config.max_position_embeddings = want.context
    return model


def latest_checkpoint(out_dir: Path) -> str | None:
    checkpoints = sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(checkpoints[-1]) if checkpoints else None


def train(run: SFTRun, data_dir: str | Path, out_dir: str | Path, *, val_problems: list[Problem] | None = None,
          command: str = "") -> dict:
    """Train (or resume) a model on ``data_dir``'s rows; write ``out_dir/final`` and ``metrics.json``.

    The learning curve (verified success on ``val_problems`` against tokens seen) is appended to
    ``out_dir/curve.jsonl`` every ``eval_every`` steps, so a killed run keeps its points.
    """
    import torch
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from .models import MODEL_PRESETS, build_model, count_parameters
    from .tokenizer import build_tokenizer

    if run.threads:
        torch.set_num_threads(run.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = MODEL_PRESETS[run.model].context
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        finished = json.loads(metrics_path.read_text())
        if finished["run"]["max_tokens"] >= run.max_tokens:
            print(f"{out} has already trained a budget of {finished['run']['max_tokens']:,} tokens; "
                  "remove it to train again, or pass a larger budget to go on")
            return finished
    tokenizer = build_tokenizer(run.numbers)
    dataset, report = tokenize_rows(load_rows(data_dir, run.kind, run.keep), tokenizer, context, run.seed,
                                    run.overflow)
    if run.init:
        model = warm_start(run.init, run.model, tokenizer)
    else:
        model = build_model(run.model, tokenizer, seed=run.seed)
    if run.packing:
        use_packed_attention(model)
    curve_path = out / "curve.jsonl"
    val = (val_problems or [])[: run.eval_problems]

    class Curve(TrainerCallback):
        recorded_step = None

        # under DDP (accelerate launch) only the main process evaluates and writes the curve
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if run.eval_every and val and state.global_step % run.eval_every == 0 and state.is_world_process_zero:
                self.record(state, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if val and state.global_step != self.recorded_step and state.is_world_process_zero:
                self.record(state, model)

        def record(self, state, model):
            self.recorded_step = state.global_step
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            scores = evaluate(model, tokenizer, val, kind=run.kind)
            point = {"step": state.global_step, "tokens": state.num_input_tokens_seen, "loss": loss, **scores}
            with curve_path.open("a") as f:
                f.write(json.dumps(point) + "\n")
            print(f"[curve] {point}", flush=True)

    trainer = SFTTrainer(model=model, args=sft_config(run, out, context, max_steps=1), train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[Curve()])
    # Packed blocks are not all full (the longer the rows, the emptier), so the step count comes from
    # the real tokens per block: ``max_tokens`` counts trained tokens, as in the curve and metrics.
    # Under DDP the processes share a step's blocks; the token count is the sum over all of them.
    tokens_per_step = report["tokens_per_epoch"] / len(trainer.train_dataset) * run.batch_size * run.grad_accum
    trainer.args.max_steps = max_steps = max(1, math.ceil(run.max_tokens / tokens_per_step))
    trainer.args.warmup_steps = warmup_steps(run, max_steps)
    trainer.args.logging_steps = max(1, min(25, max_steps // 10))  # a short run logs its loss too
    start = time.time()
    trainer.train(resume_from_checkpoint=latest_checkpoint(out))
    trainer.save_model(str(out / "final"))  # only the main process writes (under DDP)
    metrics = {
        "command": command, "run": asdict(run), "data": str(data_dir), "preprocessing": report,
        "parameters": count_parameters(trainer.model), "context": context,
        "tokens_seen": trainer.state.num_input_tokens_seen, "steps": trainer.state.global_step,
        "seconds_this_session": round(time.time() - start, 1),
        "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "losses": [[h["step"], round(h["loss"], 4)] for h in trainer.state.log_history if "loss" in h],
    }
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out / "final"))
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    if torch.distributed.is_initialized():  # under DDP: leave together, after the main process has written
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def ship(run_dir: str | Path, data_dir: str | Path, dest: str | Path, *, kind: str, n_val: int = 200,
         command: str = "") -> dict:
    """Copy a finished run's model, tokenizer and learning curve to ``dest`` (e.g. ``data/cpu-sosp``)
    with the validation problems, evaluate it on them, and write ``metrics.json``."""
    import shutil

    run_dir, data_dir, dest = Path(run_dir), Path(data_dir), Path(dest)
    trained = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((data_dir / "manifest.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for item in (run_dir / "final").iterdir():
        if item.suffix != ".bin":  # training_args.bin is a pickle: not part of a checkpoint
            shutil.copy(item, dest / item.name)
    if (run_dir / "curve.jsonl").exists():  # a run with --eval-problems 0 has no learning curve
        shutil.copy(run_dir / "curve.jsonl", dest / "curve.jsonl")
    val_rows = read_jsonl(data_dir / "problems_val.jsonl")[:n_val]
    (dest / "problems_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val_rows))
    validation = evaluate_checkpoint(dest, [Problem.from_dict(r) for r in val_rows], kind=kind)
    task = manifest["profile"]["task"]
    metrics = {
        "command": trained["command"],
        "ship_command": command,
        "data_command": manifest["command"],
        "data_seed": manifest["profile"]["data"]["seed"],
        "task": {"n_numbers": task["n_numbers"], "numbers": [task["min_number"], task["max_number"]],
                 "targets": [task["min_target"], task["max_target"]], "context": trained["context"]},
        "wall_seconds": trained["seconds_this_session"],
        "tokens_seen": trained["tokens_seen"],
        "steps": trained["steps"],
        "final_loss": trained["final_loss"],
        "parameters": trained["parameters"],
        "preprocessing": trained["preprocessing"],
        "run": trained["run"],
        "validation": {"problems": "problems_val.jsonl", "decoding": "greedy", **validation},
    }
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
