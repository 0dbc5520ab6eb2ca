"""A GRPO run: the loop around :func:`apr_mini.grpo.grpo_step`, with checkpoints, resume, a
learning curve, periodic greedy evaluation, a collapse stop, and shipping with before/after numbers.

A run checkpoints every ``save_steps`` steps (model, optimizer, step, wall time summed over
sessions) and resumes after a kill with the same random streams (a step's problems and sampling
seeds come from (seed, step)), losing at most the step in progress. Every step appends a line to
``curve.jsonl``: reward, accuracy, children per tree, total tokens, longest sequence, critical path,
share of well-formed trees and the threads' failures by kind, KL to the SFT model, entropy, clipped
share, grad norm, the lowest log-probability of a trained token and the share under 1%, the mean
|advantage| of trained trees, how often the sampled ids differ from the re-tokenized text, skipped
groups, seconds for rollouts and training; every ``eval_steps`` steps a greedy evaluation on
held-out problems too.

Run it: ``python -m apr_mini grpo --checkpoint data/cpu-apr --kind apr --ship runs/cpu/apr-grpo``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import grpo
from .config import GRPOConfig, UserFacingError
from .countdown import Problem
from .data import read_jsonl
from .packing import use_packed_attention

# Steps pooled on each side of the collapse guard: a step of 32 trees of which 19% end cleanly (SoS+
# at 4 numbers) holds 6 clean ones give or take 2, too few to judge one step against another
COLLAPSE_WINDOW = 5


def _save(model, tokenizer, optimizer, state: dict, out: Path) -> None:
    """Write the checkpoint next to the old one, then swap, so a kill never leaves a torn one."""
    tmp, final, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _latest(out: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):  # .old: killed between the two renames of _save
        if (out / name / "state.json").exists():
            return out / name
    return None


def record_collapse(out: Path, *, command: str, source: str, kind: str, state: dict) -> dict:
    """Write ``out/collapsed.json``: a run that stopped because its policy collapsed is a result too
    (a seed of a recipe that failed), so its command, config and last steps are kept beside its curve
    and :func:`apr_mini.results.available_models` reports why the model is missing."""
    curve = read_jsonl(out / "curve.jsonl")
    last = [{k: p.get(k) for k in ("step", "well_formed", "failures", "kl", "entropy", "grad_norm", "min_logp",
                                   "rare_tokens", "children", "longest_sequence", "reward")}
            for p in curve[-5:]]
    record = {"command": command, "source": source, "source_fingerprint": state["source"], "kind": kind,
              "config": state["config"], "collapsed_at_step": state["step"], "trees": state["trees"],
              "wall_seconds": round(state["seconds"], 1), "last_steps": last}
    (out / "collapsed.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _truncate_curve(path: Path, step: int) -> None:
    """Drop curve points after ``step`` (logged by a step whose checkpoint a kill lost; ``step`` 0
    keeps only the baseline evaluation)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def train(checkpoint: str | Path, kind: str, train_problems: list[Problem], out_dir: str | Path,
          config: GRPOConfig, *, eval_problems: list[Problem] | None = None, command: str = "",
          progress: bool = True, rollouts=None) -> dict:
    """GRPO from the SFT model at ``checkpoint`` (or resume ``out_dir``'s run); write
    ``out_dir/final`` and ``metrics.json``. Every step appends its point to ``out_dir/curve.jsonl``
    (with a greedy ``eval`` on ``eval_problems`` every ``eval_steps`` steps). Stops with a
    :class:`~apr_mini.config.UserFacingError` when the policy collapses (the share of cleanly ended
    trees over the last ``COLLAPSE_WINDOW`` steps falls under ``min_well_formed`` times the first
    ``COLLAPSE_WINDOW`` steps'). ``rollouts``: where trees are decoded
    (default in-process; :class:`~apr_mini.rollouts.ServerRollouts` for SGLang on a second GPU)."""
    from tqdm.auto import tqdm

    from .inference import checkpoint_fingerprint, evaluate_model
    from .models import load_model
    from .tokenizer import load_tokenizer

    if kind not in ("apr", "sosp"):
        raise ValueError(f"kind must be 'apr' or 'sosp', not {kind!r}")
    if not train_problems:
        raise UserFacingError("no training problems")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, curve_path = out / "metrics.json", out / "curve.jsonl"
    if metrics_path.exists():
        finished = json.loads(metrics_path.read_text())
        if finished["config"]["max_steps"] >= config.max_steps:
            print(f"{out} has already trained {finished['steps']} steps; remove it to train again")
            return finished
    resume = _latest(out)
    source = resume or Path(checkpoint)
    model = load_model(source)
    tokenizer = load_tokenizer(source)
    use_packed_attention(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    state = {"step": 0, "seconds": 0.0, "trees": 0, "source": checkpoint_fingerprint(checkpoint),
             "config": asdict(config)}
    if resume is not None:
        saved = json.loads((resume / "state.json").read_text())
        same = {**saved["config"], "max_steps": config.max_steps} == json.loads(json.dumps(asdict(config)))
        if not same or saved["source"] != state["source"]:
            raise UserFacingError(f"{out} holds a run with another source model or config; pass another --out "
                                  "or delete that folder to start over")
        state = {**saved, "config": asdict(config)}
        optimizer.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
        print(f"resuming {out} at step {state['step']}")
    _truncate_curve(curve_path, state["step"])
    clean_shares = [p["well_formed"] for p in read_jsonl(curve_path) if p["step"] >= 1] if curve_path.exists() else []
    (out / "collapsed.json").unlink(missing_ok=True)  # a resumed run is judged again
    ref_model = None
    if config.beta:
        ref_model = load_model(checkpoint).requires_grad_(False)
        use_packed_attention(ref_model)
    evaluation = (eval_problems or [])[: config.eval_problems]
    session_start = time.time()
    if evaluation and config.eval_steps and state["step"] == 0 and not curve_path.exists():
        baseline = {"step": 0, "eval": evaluate_model(model, tokenizer, evaluation, method=kind,
                                                      max_batch=config.max_batch)[1]}
        curve_path.write_text(json.dumps(baseline) + "\n")
    bar = tqdm(range(state["step"] + 1, config.max_steps + 1), initial=state["step"], total=config.max_steps,
               desc=f"GRPO {kind}", disable=not progress)
    for step in bar:
        problems = grpo.step_problems(train_problems, config, step)
        point, records = grpo.grpo_step(model, tokenizer, optimizer, problems, config, kind=kind, step=step,
                                        ref_model=ref_model, rollouts=rollouts)
        if evaluation and config.eval_steps and (step % config.eval_steps == 0 or step == config.max_steps):
            point["eval"] = evaluate_model(model, tokenizer, evaluation, method=kind, max_batch=config.max_batch)[1]
        state["trees"] += len(records)
        state["seconds"] = state.get("seconds", 0.0) + time.time() - session_start
        session_start = time.time()
        state["step"] = step
        with curve_path.open("a") as f:
            f.write(json.dumps(point) + "\n")
        if step % config.save_steps == 0 or step == config.max_steps:
            _save(model, tokenizer, optimizer, state, out)
        bar.set_postfix(reward=f"{point['reward']:.2f}", acc=f"{point['accuracy']:.2f}",
                        kids=f"{point['children']:.1f}", skipped=point["skipped_groups"])
        clean_shares.append(point["well_formed"])
        if len(clean_shares) > COLLAPSE_WINDOW:
            start, recent = (sum(part) / COLLAPSE_WINDOW for part in
                             (clean_shares[:COLLAPSE_WINDOW], clean_shares[-COLLAPSE_WINDOW:]))
            if recent < config.min_well_formed * start:
                _save(model, tokenizer, optimizer, state, out)
                record_collapse(out, command=command, source=str(checkpoint), kind=kind, state=state)
                raise UserFacingError(
                    f"the policy collapsed at step {step}: {recent:.0%} of the last {COLLAPSE_WINDOW} steps' trees "
                    f"ended cleanly, under {config.min_well_formed:g} x the first {COLLAPSE_WINDOW} steps' "
                    f"{start:.0%}; lower the learning rate or raise beta. The run so far is in {out} (curve.jsonl)")
    model.save_pretrained(str(out / "final"))
    tokenizer.save_pretrained(str(out / "final"))
    metrics = {"command": command, "source": str(checkpoint), "source_fingerprint": state["source"], "kind": kind,
               "config": asdict(config), "steps": state["step"], "trees": state["trees"],
               "wall_seconds": round(state["seconds"], 1), "train_problems": len(train_problems)}
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def ship(run_dir: str | Path, dest: str | Path, val_problems: list[Problem], *, max_batch: int = 64,
         command: str = "", progress: bool = True) -> dict:
    """Copy a finished run's model and curve to ``dest`` (e.g. ``data/cpu-apr-grpo``) and evaluate the
    source SFT model and the GRPO model greedily through the engine on the same ``val_problems``:
    ``metrics.json`` gets both summaries and the paired difference of their accuracies; the records
    go to ``dest/eval_before.jsonl`` and ``dest/eval_after.jsonl``."""
    from .inference import EvalSettings, open_backend, run_eval, summarize
    from .stats import paired_difference

    run_dir, dest = Path(run_dir), Path(dest)
    trained = json.loads((run_dir / "metrics.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for item in (run_dir / "final").iterdir():
        shutil.copy(item, dest / item.name)
    shutil.copy(run_dir / "curve.jsonl", dest / "curve.jsonl")
    (dest / "problems_val.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in val_problems))
    settings = EvalSettings(method=trained["kind"])
    summaries, records = {}, {}
    for name, model_dir in (("before", trained["source"]), ("after", dest)):
        path = dest / f"eval_{name}.jsonl"
        for stale in (path, path.with_suffix(".settings.json")):
            stale.unlink(missing_ok=True)
        records[name] = run_eval(open_backend(model_dir, max_batch=max_batch), val_problems, path, settings,
                                 progress=progress)
        path.with_suffix(".settings.json").unlink()  # a finished evaluation is not resumed; metrics.json says how it ran
        summaries[name] = summarize(records[name])
    metrics = {**trained, "ship_command": command,
               "validation": {"problems": "problems_val.jsonl", "decoding": "greedy, through the engine",
                              "before": summaries["before"], "after": summaries["after"],
                              "accuracy_difference": paired_difference(records["before"], records["after"])}}
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
