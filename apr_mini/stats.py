"""Statistics for accuracies on a shared set of problems: every comparison in apr-mini is paired.

- :func:`paired_difference`: after minus before on the same problems (one run each), with the
  standard error of the mean per-problem difference (``compare``, GRPO's before/after);
- :func:`bootstrap_mean` and :func:`bootstrap_difference`: accuracy over problems *and* training
  seeds (a seeds x problems 0/1 matrix), with 95% intervals that resample both (``reproduce``).
"""

from __future__ import annotations

from statistics import mean

import numpy as np


def paired_difference(before: list[dict], after: list[dict]) -> dict:
    """Accuracy after minus before on the same problems (first samples, matched by id), with the
    standard error of the mean per-problem difference and its normal 95% interval."""
    first = {r["id"]: float(r["verified"]) for r in before if r.get("sample", 0) == 0}
    pairs = [(first[r["id"]], float(r["verified"])) for r in after if r.get("sample", 0) == 0 and r["id"] in first]
    n = len(pairs)
    if n < 2:
        raise ValueError(f"a paired difference needs at least 2 shared problems, got {n}")
    diffs = [b - a for a, b in pairs]
    d = mean(diffs)
    se = (sum((x - d) ** 2 for x in diffs) / (n - 1) / n) ** 0.5
    return {"n": n, "before": round(mean(a for a, _ in pairs), 4), "after": round(mean(b for _, b in pairs), 4),
            "difference": round(d, 4), "se": round(se, 4), "ci95": [round(d - 1.96 * se, 4), round(d + 1.96 * se, 4)],
            "gained": sum(b > a for a, b in pairs), "lost": sum(b < a for a, b in pairs)}



def bootstrap_mean(matrix, rounds: int = 2000, seed: int = 0) -> dict:
    """Mean of a seeds x problems matrix (0/1 verified, or per-problem differences) with a 95%
    bootstrap interval that draws seeds and problems with replacement, so it holds both the
    problems' and the seeds' spread."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"need a non-empty seeds x problems matrix, got shape {m.shape}")
    rng = np.random.default_rng(seed)
    seeds, problems = m.shape
    draws = [m[np.ix_(rng.integers(0, seeds, seeds), rng.integers(0, problems, problems))].mean()
             for _ in range(rounds)]
    low, high = np.quantile(draws, [0.025, 0.975])
    per_seed = m.mean(axis=1)
    return {"mean": round(float(m.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "seeds": [round(float(x), 4) for x in per_seed], "n": problems,
            "seed_sd": round(float(per_seed.std(ddof=1)), 4) if seeds > 1 else None}


def bootstrap_difference(a, b, rounds: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a`` minus mean of ``b`` (seeds x problems each, same problems in the same order),
    with a 95% interval: problems are drawn once for both (the comparison is paired), each side's
    seeds on their own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a paired difference needs the same problems, got {a.shape[1]} and {b.shape[1]}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    draws = []
    for _ in range(rounds):
        problems = rng.integers(0, n, n)
        draws.append(a[np.ix_(rng.integers(0, len(a), len(a)), problems)].mean()
                     - b[np.ix_(rng.integers(0, len(b), len(b)), problems)].mean())
    low, high = np.quantile(draws, [0.025, 0.975])
    return {"difference": round(float(a.mean() - b.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "n": n, "within_noise": bool(low <= 0 <= high)}
