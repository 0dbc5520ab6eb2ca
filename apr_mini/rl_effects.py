"""What RL changes, for the reproduction's summary: each GRPO model against the model it started from.

A GRPO run's ``metrics.json`` names its starting model by fingerprint (:func:`grpo_pairs`), so each
run is compared with its own start on the same problems, paired, and the interval resamples both the
problems and the runs (:func:`apr_mini.stats.bootstrap_mean` on the per-problem differences).
:func:`rl_changes` does it with free spawning, as the paper's RL row (+7.9 points, +34.4% children);
:func:`rl_fixed_children` at a fixed number of children, the sub-call budget models before and after
GRPO on their own drawn budgets, or (where no budget model exists, the deep task) the APR models before
and after GRPO with the engine running only the first N children of each spawn
(:attr:`apr_mini.engine.Limits.spawn_width`): the paper's appendix finds RL's gain at a fixed width near
zero (83.2% and 83.3% at 10 children), which says the gain is mostly a wider search rather than better
choices at one width.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from .inference import Records, problem_rows
from .stats import bootstrap_mean, paired_difference


def grpo_pairs(models: dict[str, list[str]], fingerprints: dict[str, str], before: str, after: str) -> list[tuple[int, int]]:
    """(seed of role ``before``, seed of role ``after``) for each GRPO model of ``after`` whose
    ``metrics.json`` names, by fingerprint, the model it started from: RL's before/after compares each
    run with its own starting point."""
    sources = [fingerprints[c] for c in models[before]]
    pairs = []
    for g, checkpoint in enumerate(models[after]):
        metrics = Path(checkpoint) / "metrics.json"
        source = json.loads(metrics.read_text()).get("source_fingerprint") if metrics.exists() else None
        if source in sources:
            pairs.append((sources.index(source), g))
    return pairs


def _before_after(config, records: Records, models, fingerprints, before: str, after: str, name: str) -> dict | None:
    """RL before/after on run ``name``: the per-problem differences of every (before, after) pair, as
    a seeds x problems matrix, so the interval resamples both problems and training seeds."""
    pairs = grpo_pairs(models, fingerprints, before, after)
    if not pairs:
        return None
    runs_before = [records(before, s, name) for s, _ in pairs]
    runs_after = [records(after, g, name) for _, g in pairs]
    b = [problem_rows(seed_records) for seed_records in runs_before]
    a = [problem_rows(seed_records) for seed_records in runs_after]
    stats = bootstrap_mean([[float(y["accuracy"]) - float(x["accuracy"]) for x, y in zip(seed_b, seed_a)]
                            for seed_b, seed_a in zip(b, a)], config.bootstrap)

    def pooled(rows: list[list[dict]], c: str) -> float:
        return mean(r[c] for seed_rows in rows for r in seed_rows)

    def relative(c: str) -> float | None:  # None where there is nothing to compare (SoS+ has no children)
        return round(100 * (pooled(a, c) / pooled(b, c) - 1), 1) if pooled(b, c) else None

    accuracy = {"before": round(pooled(b, "accuracy"), 4), "after": round(pooled(a, "accuracy"), 4),
                "difference": stats["mean"], "ci95": stats["ci95"], "n": stats["n"], "pairs": len(pairs),
                "seed_differences": stats["seeds"], "seed_sd": stats["seed_sd"],
                "within_noise": stats["ci95"][0] <= 0 <= stats["ci95"][1]}
    return {"accuracy": accuracy,
            "relative_change_percent": {c: relative(c) for c in ("children", "longest_sequence", "total_tokens")},
            "per_seed": [{"before": models[before][s], "after": models[after][g],
                          **paired_difference(seed_before, seed_after)}
                         for (s, g), seed_before, seed_after in zip(pairs, runs_before, runs_after)]}


def rl_changes(config, records: Records, models, fingerprints) -> dict:
    """RL before/after of each method with free spawning, at the models' own window."""
    full = f"window-{config.windows[-1]}"
    changes = {m: _before_after(config, records, models, fingerprints, f"{m}_sft", f"{m}_grpo", full)
               for m in ("sosp", "apr")}
    return {m: change for m, change in changes.items() if change}


# how the number of children is fixed -> (the role before RL, the role after, the name of its runs at N)
FIXED_BY_PROMPT = ("apr_budget", "apr_budget_grpo", "budget-{}")   # the sub-call budget models
FIXED_BY_ENGINE = ("apr_sft", "apr_grpo", "width-{}")              # Limits.spawn_width


def rl_fixed_children(config, records: Records, models, fingerprints, widths: tuple[int, ...] = ()) -> dict:
    """RL before/after at a fixed number of children: each sub-call budget model against its GRPO run
    (``grpo --sub-call-budgets``), at every budget of ``config.sub_call_budgets``; or, given ``widths``,
    each APR SFT model against its GRPO run with the engine's ``spawn_width`` at each (runs ``width-N``)."""
    (before, after, run_name), values = (FIXED_BY_ENGINE, widths) if widths else (FIXED_BY_PROMPT, config.sub_call_budgets)
    changes = {v: _before_after(config, records, models, fingerprints, before, after, run_name.format(v)) for v in values}
    return {str(v): change for v, change in changes.items() if change}


def fixed_children_sentence(fixed: dict, how: str = "the sub-call budget model before and after GRPO") -> str:
    """The README's line for :func:`rl_fixed_children`: RL's paired gain at each fixed number of children,
    ``how`` saying what fixed it."""
    def one(budget: str, change: dict) -> str:
        a = change["accuracy"]
        return (f"{budget} children {100 * a['before']:.1f}% -> {100 * a['after']:.1f}% "
                f"({100 * a['difference']:+.1f}, 95% CI {100 * a['ci95'][0]:+.1f} to {100 * a['ci95'][1]:+.1f}"
                + (", within noise)" if a["within_noise"] else ")"))
    return (f"RL at a fixed number of children ({how}, paired; "
            "paper: 83.2% -> 83.3% at 10 children): " + "; ".join(one(b, c) for b, c in fixed.items()) + ".")
