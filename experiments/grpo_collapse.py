"""Why an APR GRPO run collapses. First, whether training on re-tokenized text could be the cause:
how often a rollout's sampled ids differ from its text tokenized again. Then where a GRPO step's
gradient comes from: by the role of the row and by how likely the policy found
the trained token. Measured on the steps before a collapse and on a quiet step, to name its cause.

A GRPO run keeps only its latest checkpoint, so save the ones to study while it runs (any copy of
``<run>/checkpoint`` taken after step ``s - 1`` reproduces step ``s``: its problems and sampling seeds
come from (seed, step)). For each step this replays the rollouts from that checkpoint, builds the
rows and weights exactly as the step did, and backpropagates the loss of one part of the batch at a
time:

- by row: the root's first call (it spawns, or answers alone), the root's calls after a join, the
  children's calls;
- by the policy's probability of the trained token: under 1%, 1-50%, over 50%;
- by term: the policy-gradient surrogate against ``beta`` times the k3 KL, whose gradient per token,
  ``beta * (1 - p_ref / p)``, grows without bound where the policy has left a token the SFT model
  liked.

Each part's gradient norm (before clipping) and its share of the tokens and of the weight
``sum |advantage| x token weight`` is printed, with the step's share of well-formed trees, its
thread failures by kind, and the rows of the loudest role with the largest gradients (their
length, advantage, token weight, mean probability and text).

Run (``--agreement`` first: how often re-tokenizing a call's text would change its ids)::

    python experiments/grpo_collapse.py --agreement data/cpu-apr

    python experiments/grpo_collapse.py --snapshots runs/cpu/grpo-apr-seed1-snap --source data/seeds/cpu-apr-seed1 \\
        --steps 25 32 33 34 --threads 1 --out data/grpo/collapse-apr-seed1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROBABILITY_BANDS = ((-float("inf"), -4.605, "p < 1%"), (-4.605, -0.693, "1% <= p < 50%"), (-0.693, 0.0, "p >= 50%"))


def row_roles(rows) -> list[str]:
    """Each row's role in its tree: the root's first call, the root after a join, or a child's call."""
    roles, seen_root = [], set()
    for row in rows:
        if row.thread != "root":
            roles.append("child calls")
        else:
            roles.append("root, after a join" if row.tree in seen_root else "root, first call")
            seen_root.add(row.tree)
    return roles


def part_gradient(model, refs, logps, rows, weights, config, keep, term: str = "both") -> float:
    """Grad norm of the step's loss restricted to the tokens ``keep(row_index, logps)`` selects, and
    to one ``term`` of it: the clipped policy-gradient surrogate ("surrogate"), ``beta`` times the KL
    ("kl"), or both."""
    import torch

    from apr_mini import grpo
    from apr_mini.packing import block_logps

    model.zero_grad(set_to_none=True)
    for i, row in enumerate(rows):
        mask = keep(i, logps[i])  # chosen on the step's own (no-grad) log-probs, so unchosen rows cost nothing
        if not mask.any():
            continue
        lp = block_logps(model, [row])[0][0]
        loss, kl = grpo.per_token_loss(lp, lp.detach(), torch.full_like(lp, row.advantage), epsilon=config.epsilon,
                                       beta=config.beta, ref_logps=refs[i])
        chosen = {"both": loss, "kl": config.beta * kl, "surrogate": loss - config.beta * kl}[term]
        if chosen.requires_grad:
            (weights[i] * (chosen * mask).sum()).backward()
    norms = [p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None]
    return float(sum(norms) ** 0.5) if norms else 0.0


def analyse_step(checkpoint: Path, source: Path, problems_path: Path, step: int, kind: str,
                 top_rows: int = 5) -> dict:
    import torch

    from apr_mini import grpo, rollouts
    from apr_mini.config import GRPOConfig
    from apr_mini.data import load_problems
    from apr_mini.models import load_model
    from apr_mini.packing import block_logps, use_packed_attention
    from apr_mini.tokenizer import load_tokenizer

    state = json.loads((checkpoint / "state.json").read_text())
    if state["step"] != step - 1:
        raise SystemExit(f"{checkpoint} is after step {state['step']}; step {step} needs the one after {step - 1}")
    config = GRPOConfig(**state["config"])
    model, tokenizer = load_model(checkpoint), load_tokenizer(checkpoint)
    ref_model = load_model(source).requires_grad_(False)
    for m in (model, ref_model):
        use_packed_attention(m)
    problems = grpo.step_problems(load_problems(problems_path), config, step)
    records = grpo.step_rollouts(model, tokenizer, problems, config, kind=kind, step=step)
    _, _, trees, rows = grpo.score_rollouts(records, tokenizer, config)
    context = int(model.config.max_position_embeddings)
    weights = grpo.token_weights(rows, config.loss_type, config.sequence_weighting,
                                 config.max_completion_length or context)
    roles = row_roles(rows)
    model.train()
    with torch.no_grad():
        logps = [block_logps(model, [row])[0][0] for row in rows]
        refs = [block_logps(ref_model.train(), [row])[0][0] if config.beta else None for row in rows]
    total_weight = sum(abs(r.advantage) * w * r.n_completion for r, w in zip(rows, weights))
    tokens = sum(r.n_completion for r in rows)
    everything = lambda i, lp: torch.ones_like(lp).bool()  # noqa: E731
    parts = {"all": part_gradient(model, refs, logps, rows, weights, config, everything)}
    if config.beta:
        for term in ("surrogate", "kl"):
            parts[f"{term} term"] = part_gradient(model, refs, logps, rows, weights, config, everything, term)
    shares = {}
    for role in ("root, first call", "root, after a join", "child calls"):
        chosen = [i for i, r in enumerate(roles) if r == role]
        parts[role] = part_gradient(model, refs, logps, rows, weights, config,
                                    lambda i, lp, role=role: torch.full_like(lp, roles[i] == role).bool())
        shares[role] = {"rows": len(chosen), "tokens": sum(rows[i].n_completion for i in chosen) / max(1, tokens),
                        "weight": sum(abs(rows[i].advantage) * weights[i] * rows[i].n_completion for i in chosen)
                        / max(1e-12, total_weight)}
    for low, high, band in PROBABILITY_BANDS:
        parts[band] = part_gradient(model, refs, logps, rows, weights, config,
                                    lambda i, lp, low=low, high=high: (lp >= low) & (lp < high) if high < 0
                                    else lp >= low)
        in_band = [((lp >= low) & ((lp < high) if high < 0 else True)) for lp in logps]
        shares[band] = {"tokens": float(sum(m.sum() for m in in_band)) / max(1, tokens),
                        "weight": float(sum(abs(r.advantage) * w * m.sum() for r, w, m in zip(rows, weights, in_band)))
                        / max(1e-12, total_weight)}
    loudest = max(("root, first call", "root, after a join", "child calls"), key=parts.get)
    row_norms = sorted(((part_gradient(model, refs, logps, rows, weights, config,
                                       lambda i, lp, j=j: torch.full_like(lp, i == j).bool()), j)
                        for j, role in enumerate(roles) if role == loudest), reverse=True)[:top_rows]
    top = [{"grad_norm": norm, "thread": rows[j].thread, "completion_tokens": rows[j].n_completion,
            "advantage": rows[j].advantage, "token_weight": weights[j], "mean_p": float(logps[j].exp().mean()),
            "completion": tokenizer.decode(rows[j].ids[rows[j].n_prompt:])[:300]} for norm, j in row_norms]
    return {"step": step, "well_formed": sum(grpo.well_formed(r) for r in records) / len(records),
            "failures": grpo.failure_counts(records), "rows": len(rows), "tokens": tokens,
            "agreement": rollouts.token_agreement(records, tokenizer, model, trees), "grad_norm": parts, "shares": shares,
            "loudest_rows": {"role": loudest, "rows": top}}


def agreement(checkpoint: Path, problems_path: Path, kind: str, problems: int = 8, generations: int = 8) -> dict:
    """Sampled ids against re-tokenized text on ``problems`` x ``generations`` trees sampled at
    temperature 1 from ``checkpoint`` (see :func:`apr_mini.rollouts.token_agreement`)."""
    from apr_mini import rollouts
    from apr_mini.data import load_problems
    from apr_mini.models import load_model
    from apr_mini.packing import use_packed_attention
    from apr_mini.tokenizer import load_tokenizer

    model, tokenizer = load_model(checkpoint), load_tokenizer(checkpoint)
    use_packed_attention(model)
    records = rollouts.rollout(model, tokenizer, load_problems(problems_path, problems), num_generations=generations,
                               kind=kind, seed=0)
    return {"checkpoint": str(checkpoint), "trees": len(records), **rollouts.token_agreement(records, tokenizer, model)}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agreement", type=Path, metavar="CHECKPOINT",
                        help="only compare sampled ids with re-tokenized text on 64 trees of this model")
    parser.add_argument("--snapshots", type=Path, help="folder of step-N copies of a run's checkpoint")
    parser.add_argument("--source", type=Path, help="the SFT model the run started from (its reference)")
    parser.add_argument("--problems", type=Path, default=Path("data/countdown-cpu/problems_train.jsonl"),
                        help="the run's training problems")
    parser.add_argument("--steps", type=int, nargs="+")
    parser.add_argument("--kind", default="apr", choices=["apr", "sosp"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.agreement:
        print(json.dumps(agreement(args.agreement, args.problems, args.kind), indent=1))
        return
    if not (args.snapshots and args.source and args.steps):
        parser.error("--snapshots, --source and --steps are needed (or --agreement CHECKPOINT)")
    results = []
    for step in args.steps:
        result = analyse_step(args.snapshots / f"step-{step - 1}", args.source, args.problems, step, args.kind)
        results.append(result)
        print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps({"snapshots": str(args.snapshots), "source": str(args.source),
                                        "steps": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
