"""Is the deep GRPO loss RL's doing, or what any move of that size does to greedy decoding?

Every deep APR GRPO run lost greedy accuracy on the 50 validation problems while its sampled success
stayed flat (docs/training.md). Adam takes steps of about the learning rate per weight whatever the
gradient's size, so 30 steps of a weak, noisy gradient still move every weight. This control moves
the SFT model by a random direction of the same size, tensor by tensor (Gaussian noise rescaled to
the norm of that tensor's GRPO update), and evaluates it greedily through the engine on the same
validation problems: if a random move of RL's size loses as much, the loss is the size of the move on
a brittle greedy search, not what RL learned; if it loses nothing, RL's direction did the damage.

For each GRPO model folder given (its ``metrics.json`` names the SFT model it started from), ``--draws``
random directions are evaluated (records resumable in ``runs/drift/``), each paired with the SFT
model's and the GRPO model's own validation records (``eval_before.jsonl``, ``eval_after.jsonl``,
written by ``grpo --ship``). Writes ``data/grpo/cpu4-drift.json``.

Run:  python experiments/grpo_drift.py data/cpu4-apr-grpo data/grpo/cpu4-apr-lr3e-5 [--draws 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "grpo" / "cpu4-drift.json"
RECORDS = ROOT / "runs" / "drift"


def random_move(sft_model, grpo_model, seed: int) -> dict:
    """Give ``sft_model`` a random move, tensor by tensor the size of RL's (in place); returns the
    relative size of RL's move (update norm over weight norm, over all trained tensors)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    moved = dict(grpo_model.named_parameters())
    update_sq = weight_sq = 0.0
    with torch.no_grad():
        for name, weight in sft_model.named_parameters():
            update = moved[name].detach() - weight
            norm = float(update.norm())
            update_sq, weight_sq = update_sq + norm ** 2, weight_sq + float(weight.norm()) ** 2
            if norm == 0.0:  # a tensor RL left alone stays put
                continue
            noise = torch.randn(weight.shape, generator=generator).to(weight.device)  # the same draw on any device
            weight.add_(noise * (norm / float(noise.norm())))
    return {"relative_update": round((update_sq / weight_sq) ** 0.5, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grpo", nargs="+", help="GRPO model folders made by grpo --ship (weights included)")
    parser.add_argument("--draws", type=int, default=2, help="random directions per model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    import torch

    from apr_mini.backends import TransformersBackend
    from apr_mini.config import get_device
    from apr_mini.data import load_problems, read_jsonl
    from apr_mini.inference import EvalSettings, run_eval
    from apr_mini.models import load_model
    from apr_mini.stats import paired_difference
    from apr_mini.tokenizer import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    for folder in map(Path, args.grpo):
        metrics = json.loads((folder / "metrics.json").read_text())
        if not (folder / "model.safetensors").exists():
            raise SystemExit(f"{folder} has no weights: rerun its command ({metrics['command']})")
        problems = load_problems(folder / "problems_val.jsonl")
        before, after = (read_jsonl(folder / f"eval_{name}.jsonl") for name in ("before", "after"))
        entry = {"sft": metrics["source"], "config": {k: metrics["config"][k] for k in ("learning_rate", "beta", "loss_type",
                                                                                        "mask_truncated_completions")},
                 "n": len(problems), "grpo": paired_difference(before, after), "random": [],
                 "command": f"python experiments/grpo_drift.py {folder} --draws {args.draws}"}
        tokenizer = load_tokenizer(folder)
        device = get_device(verbose=False)
        grpo_model = load_model(folder, device)
        for draw in range(args.draws):
            model = load_model(ROOT / metrics["source"], device)
            size = random_move(model, grpo_model, seed=draw)
            path = RECORDS / folder.name / f"draw-{draw}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            records = run_eval(TransformersBackend(model, tokenizer), problems, path, EvalSettings(method=metrics["kind"]),
                               progress=False)
            entry["random"].append({"seed": draw, **size, "against_sft": paired_difference(before, records),
                                    "against_grpo": paired_difference(after, records)})
            print(f"{folder}: random move {draw} ({size['relative_update']:.4f} of the weights): "
                  f"{entry['random'][-1]['against_sft']['after']:.0%} (SFT {entry['grpo']['before']:.0%}, "
                  f"GRPO {entry['grpo']['after']:.0%})", flush=True)
        out[str(folder)] = entry
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
