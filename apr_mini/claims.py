"""The summary of a reproduction: figure points, the paper's three claims, losses (RL before/after: :mod:`apr_mini.rl_effects`).

:func:`apr_mini.results.reproduce` runs the engine and hands this module the finished records;
everything here is arithmetic on them, so it runs in a second on a records folder. Each figure point
is an accuracy over problems and training seeds with a 95% bootstrap interval (:mod:`apr_mini.stats`),
its mean costs, and each seed's per-problem outcomes as a 0/1 string, so a reader can recompute any
statistic. Each claim sets APR against SoS+ with a paired bootstrap difference
(:func:`apr_mini.stats.bootstrap_difference`); :func:`claims_markdown` writes the README's block.
"""

from __future__ import annotations

from dataclasses import asdict
from statistics import mean, median

from .attribution import loss_attribution
from .config import ROLES, ReproduceConfig
from .inference import Records, fits_window, problem_rows
from .rl_effects import fixed_children_sentence, rl_changes, rl_fixed_children
from .stats import bootstrap_difference, bootstrap_mean

LABELS = {"sosp_sft": "SoS+", "apr_sft": "APR", "sosp_grpo": "SoS+ GRPO", "apr_grpo": "APR GRPO",
          "sosp_budget": "SoS+ token budget", "apr_budget": "APR sub-call budget",
          "apr_budget_grpo": "APR sub-call budget GRPO", "sosp_room": "SoS+ with room"}
PAPER = {  # abstract and section 5: APR and SoS+ accuracy (%)
    "context": {"setting": "4k-token context", "apr": 83.4, "sosp": 60.0},
    "compute": {"setting": "20k total tokens", "apr": 80.1, "sosp": 66.6},
    "latency": {"setting": "about 5,000 ms", "apr": 75.2, "sosp": 57.3},
    "rl": {"before": 75.5, "after": 83.4, "children": 34.4, "longest_sequence": 22.1},
    "compute_saving_vs_pass8": 57.4,
}


COSTS = ("total_tokens", "longest_sequence", "critical_path", "children", "latency_s")


def _bits(values) -> str:
    return "".join("1" if v else "0" for v in values)


def _point(config: ReproduceConfig, role: str, name: str, rows_per_seed: list[list[dict]], stat: str = "accuracy",
           **info) -> dict:
    """One figure point: accuracy over problems and seeds with its interval, mean costs, and each
    seed's per-problem outcomes (a 0/1 string) so a reader can recompute any statistic."""
    matrix = [[float(r[stat]) for r in rows] for rows in rows_per_seed]
    stats = bootstrap_mean(matrix, config.bootstrap)
    seed_costs = {c: [round(mean(r[c] for r in rows), 2) for rows in rows_per_seed]
                  for c in COSTS if rows_per_seed[0] and c in rows_per_seed[0][0]}
    return {"role": role, "label": LABELS[role], "method": role.split("_")[0], "name": name, "stat": stat, **info,
            "accuracy": stats["mean"], "ci95": stats["ci95"], "seed_accuracies": stats["seeds"],
            "seed_sd": stats["seed_sd"], "n": stats["n"], "seeds": len(matrix),
            **{c: round(mean(values), 2) for c, values in seed_costs.items()}, "seed_costs": seed_costs,
            "outcomes": [_bits(row) for row in matrix]}


def _matrix(point: dict) -> list[list[int]]:
    return [[int(c) for c in bits] for bits in point["outcomes"]]


def own_window(config: ReproduceConfig, role: str) -> int:
    """The window a role's models were trained with: the shared one, or ``room_window`` for SoS+ with room."""
    return config.room_window if role == "sosp_room" else config.windows[-1]


def _context_points(config, records: Records, models) -> tuple[list[dict], dict | None]:
    points, check = [], None
    for role in ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo", "sosp_room"):
        seeds = range(len(models[role]))
        if not models[role]:
            continue
        if role.startswith("sosp"):
            full = own_window(config, role)
            per_seed = [records(role, s, f"window-{full}") for s in seeds]
            for w in sorted({*config.windows, full}):
                rows = [[{"accuracy": r["verified"] and fits_window(r, w)} for r in sorted(recs, key=lambda r: r["id"])]
                        for recs in per_seed]
                points.append(_point(config, role, f"window-{w}", rows, claim="context", window=w, derived=w != full))
            if role == "sosp_sft":
                window = config.derivation_window
                real = records(role, 0, f"window-{window}")
                derived = {r["id"]: bool(r["verified"] and fits_window(r, window)) for r in per_seed[0]}
                agree = sum(derived[r["id"]] == bool(r["verified"]) for r in real)
                check = {"window": window, "n": len(real), "agree": agree,
                         "derived": round(mean(derived.values()), 4),
                         "real": round(mean(float(r["verified"]) for r in real), 4)}
        else:
            for w in config.windows:
                rows = [problem_rows(records(role, s, f"window-{w}")) for s in seeds]
                points.append(_point(config, role, f"window-{w}", rows, claim="context", window=w, derived=False))
    return points, check


def _compute_points(config, records: Records, models) -> list[dict]:
    points = []
    for role in ("sosp_budget", "apr_budget"):
        budgets = config.token_budgets if role == "sosp_budget" else config.sub_call_budgets
        for budget in budgets if models[role] else ():
            rows = [problem_rows(records(role, s, f"budget-{budget}"))
                    for s in range(len(models[role]))]
            points.append(_point(config, role, f"budget-{budget}", rows, claim="compute", budget=budget,
                                 series=LABELS[role]))
    for role in ("sosp_sft", "apr_sft"):
        seeds = [s for s in range(min(config.sample_seeds, len(models[role])))]
        if not seeds or max(config.ks) == 1:
            continue
        sampled = [records(role, s, f"samples-{max(config.ks)}") for s in seeds]
        stats = [("pass_at_n", "pass@k"), ("majority", "majority@k")] if role == "sosp_sft" else [("majority", "majority@k")]
        for stat, series in stats:
            for k in config.ks:
                rows = [problem_rows([r for r in recs if r["sample"] < k]) for recs in sampled]
                points.append(_point(config, role, f"{series.replace('k', str(k))}", rows, stat, claim="compute",
                                     k=k, series=f"{LABELS[role]} {series}"))
    for role in ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo", "sosp_room"):
        if models[role]:
            rows = [problem_rows(records(role, s, f"window-{own_window(config, role)}"))
                    for s in range(len(models[role]))]
            points.append(_point(config, role, "greedy", rows, claim="compute", series=f"{LABELS[role]} greedy"))
    return points


def decoded_path(tree: dict, start: int = 0) -> int:
    """The critical path counted in decoded tokens only (each call's ``new_tokens``; prompts and joins
    are prefilled in one pass, not decoded one by one): the decoding steps no engine can avoid."""
    clock, subs = start, tree.get("sub_calls", [])
    for k, call in enumerate(tree.get("calls", [])):
        clock += call.get("new_tokens", 0)
        if k < len(subs):
            clock = max([clock] + [decoded_path(child, clock) for child in subs[k]])
    return clock


def _latency_points(config, records: Records, timed) -> list[dict]:
    """Median over rounds of each point's mean latency, and the critical-path floor."""
    rounds = {}
    for run in timed:
        rounds.setdefault(int(run.name.split("-")[1][1:]), []).append(run)
    per_token = []
    for round_runs in rounds.values():  # single-stream seconds per decoded token: a SoS+ search alone is one stream
        sosp = [r for run in round_runs if run.method == "sosp" for r in records(run.role, run.seed, run.name)]
        per_token.append(sum(r["metrics"]["latency_s"] for r in sosp) / max(1, sum(decoded_path(r["tree"]) for r in sosp)))
    points = []
    for run in [r for r in timed if r.name.startswith("latency-r0-")]:
        base = run.name.split("-", 2)[2]
        rounds_records = [records(run.role, run.seed, f"latency-r{k}-{base}") for k in rounds]
        samples = [problem_rows(recs) for recs in rounds_records]
        rows = problem_rows(records(run.role, 0, base))
        floor = [mean(decoded_path(r["tree"]) for r in recs) * t for recs, t in zip(rounds_records, per_token)]
        points.append(_point(config, run.role, base, [rows], claim="latency", series=LABELS[run.role],
                             timed_problems=config.latency_problems,
                             latency_alone_s=round(median(mean(r["latency_s"] for r in rs) for rs in samples), 4),
                             latency_rounds=[round(mean(r["latency_s"] for r in rs), 4) for rs in samples],
                             floor_s=round(median(floor), 4), seconds_per_token=round(median(per_token), 6)))
    return points


def _side(point: dict | None) -> dict | None:
    keys = ("label", "name", "accuracy", "ci95", "seeds", "n", "total_tokens", "latency_alone_s")
    return {k: point[k] for k in keys if k in point} if point else None


def _claim(config, claim: str, setting: str, apr: dict | None, sosp: dict | None,
           cheapest: dict[str, float] | None = None) -> dict:
    """One claim's row; ``cheapest`` (method -> its least measured cost) marks a side that was measured
    but has no point within the setting's limit, so the table can say so rather than "not measured"."""
    row = {"claim": claim, "setting": setting, "paper": PAPER.get(claim), "apr": _side(apr), "sosp": _side(sosp)}
    for method, side in (("apr", apr), ("sosp", sosp)):
        if side is None and (cheapest or {}).get(method) is not None:
            row[f"{method}_cheapest"] = cheapest[method]
    if apr and sosp:
        row["difference"] = bootstrap_difference(_matrix(apr), _matrix(sosp), config.bootstrap)
        row["reproduces"] = row["difference"]["ci95"][0] > 0
    return row


def _best(points: list[dict], method: str, key: str, limit: float) -> dict | None:
    fitting = [p for p in points if p["method"] == method and p.get(key) is not None and p[key] <= limit]
    return max(fitting, key=lambda p: (p["accuracy"], -p[key]), default=None)


def _cheapest(points: list[dict], key: str) -> dict[str, float]:
    """Each method's least measured ``key`` (its fastest or cheapest point)."""
    out = {}
    for p in points:
        if p.get(key) is not None:
            out[p["method"]] = min(out.get(p["method"], p[key]), p[key])
    return out


def claims(config: ReproduceConfig, context: list[dict], compute: list[dict], latency: list[dict]) -> dict:
    """The paper's three comparisons, APR against SoS+, each with a paired bootstrap difference."""
    full = config.windows[-1]
    at = {(p["role"], p["window"]): p for p in context}
    # every window but the smallest (where neither method has room to finish): the models' own last
    rows = [_claim(config, "context", f"{window}-token context window" + (" (the models' own)" if window == full else "")
                   + f", after {stage}", at.get((f"apr_{role}", window)), at.get((f"sosp_{role}", window)))
            for stage, role in (("SFT", "sft"), ("GRPO", "grpo")) for window in config.windows[1:]
            if (f"apr_{role}", window) in at and (f"sosp_{role}", window) in at]
    budget = 5 * full  # the paper compares at 20k total tokens, five times its 4k context
    # pass@k needs the verifier at test time (an oracle), so it is not a method the claim compares;
    # compute_saving sets APR against it, as the paper does with pass@8
    deployable = [p for p in compute if p["stat"] != "pass_at_n"]
    rows.append(_claim(config, "compute", f"at most {budget:,} total tokens per problem (5x the context; no oracle)",
                       _best(deployable, "apr", "total_tokens", budget), _best(deployable, "sosp", "total_tokens", budget),
                       _cheapest(deployable, "total_tokens")))
    sosp_greedy = next((p for p in latency if p["role"] == "sosp_sft"), None)
    if sosp_greedy:
        limit = sosp_greedy["latency_alone_s"]
        rows.append(_claim(config, "latency", f"at most {limit:.2f} s per problem (SoS+'s greedy latency)",
                           _best(latency, "apr", "latency_alone_s", limit), _best(latency, "sosp", "latency_alone_s", limit),
                           _cheapest(latency, "latency_alone_s")))
    return {"rows": rows, "compute_saving": compute_saving(compute, max(config.ks)),
            "latency_goal": latency_goal(config, latency)}


PATH_RATIO_GOAL = 0.6  # issue 22: APR's critical path at most 0.6x the most accurate SoS+ trace


def latency_goal(config: ReproduceConfig, latency: list[dict]) -> dict | None:
    """APR's greedy SFT point against every greedy SoS+ SFT model (the one with room included): is APR
    at least as accurate as each (point estimates; the paired difference with the most accurate of
    them, with its interval), is its critical path at most :data:`PATH_RATIO_GOAL` of that model's
    trace, and is it faster alone on the machine in every back-to-back round?"""
    apr = next((p for p in latency if p["role"] == "apr_sft"), None)
    sosp = [p for p in latency if p["role"] in ("sosp_sft", "sosp_room")]
    if apr is None or not sosp:
        return None
    best = max(sosp, key=lambda p: p["accuracy"])
    ratio = apr["critical_path"] / best["critical_path"] if best["critical_path"] else None
    faster = sum(a < b for a, b in zip(apr["latency_rounds"], best["latency_rounds"]))
    as_accurate = all(apr["accuracy"] >= p["accuracy"] for p in sosp)
    return {"apr": _side(apr) | {"critical_path": apr["critical_path"]},
            "sosp": [_side(p) | {"critical_path": p["critical_path"]} for p in sosp], "most_accurate_sosp": best["label"],
            "difference": bootstrap_difference(_matrix(apr), _matrix(best), config.bootstrap),
            "as_accurate_as_every_sosp": as_accurate, "path_ratio": round(ratio, 3) if ratio else None,
            "rounds": len(apr["latency_rounds"]), "rounds_apr_faster": faster,
            "met": bool(as_accurate and ratio is not None and ratio <= PATH_RATIO_GOAL
                        and faster == len(apr["latency_rounds"]))}


def latency_sentence(goal: dict) -> str:
    """:func:`latency_goal` in one sentence."""
    diff = goal["difference"]
    return (f"Latency goal ({'met' if goal['met'] else 'not met'}): APR {100 * goal['apr']['accuracy']:.1f}% against "
            f"{goal['most_accurate_sosp']} {100 * max(p['accuracy'] for p in goal['sosp']):.1f}% (the most accurate SoS+; "
            f"APR - SoS+ {100 * diff['difference']:+.1f}, 95% CI {100 * diff['ci95'][0]:+.1f} to {100 * diff['ci95'][1]:+.1f}); "
            f"APR's critical path is {goal['path_ratio']}x its trace (goal: at most {PATH_RATIO_GOAL}x); APR was faster "
            f"alone in {goal['rounds_apr_faster']} of {goal['rounds']} back-to-back rounds.")


def compute_saving(compute: list[dict], k: int) -> dict | None:
    """The paper's check: at SoS+ pass@k's accuracy, how much less compute APR needs (the cheapest
    measured APR point at least as accurate); the paper reports 57.4% less at k = 8."""
    target = next((p for p in compute if p["role"] == "sosp_sft" and p["stat"] == "pass_at_n" and p["k"] == k), None)
    if target is None:
        return None
    reaching = [p for p in compute if p["method"] == "apr" and p["accuracy"] >= target["accuracy"] > 0]
    cheapest = min(reaching, key=lambda p: p["total_tokens"], default=None)
    best = max((p for p in compute if p["method"] == "apr"), key=lambda p: p["accuracy"], default=None)
    return {"k": k, "sosp_pass_at_k": _side(target), "apr_point": _side(cheapest),
            "saving_percent": round(100 * (1 - cheapest["total_tokens"] / target["total_tokens"]), 1) if cheapest else None,
            "apr_best": _side(best)}


def _losses(config, records: Records, models) -> dict:
    """Where each model loses at the models' own window (:func:`apr_mini.attribution.loss_attribution`),
    one table per training seed."""
    return {role: [loss_attribution(records(role, s, f"window-{own_window(config, role)}")) for s in range(len(seeds))]
            for role, seeds in models.items() if seeds and "budget" not in role}


def summarize_reproduction(config: ReproduceConfig, models: dict[str, list[str]], fingerprints: dict[str, str],
                           missing: list[str], records: Records, timed: list, command: str = "") -> dict:
    """``summary.json``: every figure point, the claims, RL before/after and the losses, from the
    finished runs' records (``timed``: the latency rounds' runs, each with ``role``, ``seed``, ``name``
    and ``method``; empty when they were left out)."""
    context, check = _context_points(config, records, models)
    compute = _compute_points(config, records, models)
    latency = _latency_points(config, records, timed) if timed else []
    return {
        "command": command, "config": asdict(config),
        "models": {role: [{"checkpoint": c, "fingerprint": fingerprints[c]} for c in cs]
                   for role, cs in models.items()},
        "missing": missing, "paper": PAPER,
        "claims": claims(config, context, compute, latency), "derivation_check": check,
        "rl": rl_changes(config, records, models, fingerprints),
        "rl_fixed_children": rl_fixed_children(config, records, models, fingerprints), "context": context, "compute": compute, "latency": latency,
        "losses": _losses(config, records, models),
    }


def _headline_rows(summary: dict) -> dict[str, dict]:
    """Each claim's headline row: context at the models' own window after SFT, compute, latency."""
    rows = {}
    for row in summary["claims"]["rows"]:
        own = row["claim"] != "context" or ("the models' own" in row["setting"] and row["setting"].endswith("after SFT"))
        if own and ("difference" in row or "apr_cheapest" in row or "sosp_cheapest" in row):
            rows.setdefault(row["claim"], row)
    return rows


def depth_rows(tasks: dict[str, dict]) -> list[dict]:
    """APR minus SoS+ for each claim on each task (``{task name: summary}``, shallow first), with the
    paired 95% interval: what the depth figure draws. A claim a task did not measure is left out there."""
    out = []
    for task, summary in tasks.items():
        for claim, row in _headline_rows(summary).items():
            if "difference" not in row:
                out.append({"task": task, "claim": claim, "setting": row["setting"], "difference": None,
                            "why": next(none_within(row, m) for m in ("apr", "sosp") if f"{m}_cheapest" in row)})
                continue
            diff = row["difference"]
            out.append({"task": task, "claim": claim, "setting": row["setting"], "difference": diff["difference"],
                        "ci95": diff["ci95"], "n": row["apr"]["n"], "within_noise": diff["within_noise"]})
    return out


def none_within(row: dict, method: str) -> str:
    """A side measured with no point within the row's limit, in words (e.g. APR slower alone than SoS+)."""
    cheapest = row[f"{method}_cheapest"]
    least = f"fastest {cheapest:.2f} s" if row["claim"] == "latency" else f"cheapest {cheapest:,.0f} tokens"
    return f"no {'APR' if method == 'apr' else 'SoS+'} point within the limit (its {least})"


def depth_markdown(depth: list[dict]) -> str:
    """The depth rows as a table: one row per claim, one column per task."""
    tasks = list(dict.fromkeys(r["task"] for r in depth))
    at = {(r["claim"], r["task"]): r for r in depth}
    lines = ["| claim | " + " | ".join(f"{t}: APR - SoS+ (95% CI)" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for claim in dict.fromkeys(r["claim"] for r in depth):
        cells = [(r["why"] if r["difference"] is None else
                  f"{100 * r['difference']:+.1f} ({100 * r['ci95'][0]:+.1f} to {100 * r['ci95'][1]:+.1f}), n={r['n']}")
                 if (r := at.get((claim, t))) else "not measured" for t in tasks]
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saving_sentence(saving: dict) -> str:
    """The paper's compute check (:func:`compute_saving`) in one sentence."""
    target = saving["sosp_pass_at_k"]
    reach = (f"APR reaches it with {saving['saving_percent']:.1f}% less compute ({saving['apr_point']['name']})"
             if saving["apr_point"] else
             f"no APR point reaches it; APR's best is {100 * saving['apr_best']['accuracy']:.1f}% ({saving['apr_best']['name']})")
    return (f"SoS+ pass@{saving['k']}: {100 * target['accuracy']:.1f}% at {target['total_tokens']:,.0f} tokens per problem "
            f"(an oracle: the verifier picks); {reach}. The paper: APR matches it with "
            f"{PAPER['compute_saving_vs_pass8']}% less compute.")


def claims_markdown(summary: dict) -> str:
    """The README's block (also ``claims.md`` beside the summary): each claim, the paper's figures and
    ours with 95% intervals; the paper's compute check; how many training seeds each role had, and
    which configured models were not evaluated (absent, or a GRPO run that collapsed)."""
    def pct(row, method):
        side = row[method]
        if not side:
            return none_within(row, method) if f"{method}_cheapest" in row else "not measured"
        low, high = side["ci95"]
        return f"{100 * side['accuracy']:.1f}% ({100 * low:.1f}-{100 * high:.1f}), {side['label']}, {side['seeds']} seed(s)"

    lines = ["| claim | paper: APR / SoS+ | setting here | APR (95% CI) | SoS+ (95% CI) | APR - SoS+ (95% CI) |",
             "|---|---|---|---|---|---|"]
    for row in summary["claims"]["rows"]:
        paper = f"{row['paper']['apr']}% / {row['paper']['sosp']}% ({row['paper']['setting']})"
        diff = row.get("difference")
        gap = (f"{100 * diff['difference']:+.1f} ({100 * diff['ci95'][0]:+.1f} to {100 * diff['ci95'][1]:+.1f})"
               + (", within noise" if diff["within_noise"] else "")) if diff else "n/a"
        lines.append(f"| {row['claim']} | {paper} | {row['setting']} | {pct(row, 'apr')} | {pct(row, 'sosp')} | {gap} |")
    if summary["claims"]["compute_saving"]:
        lines += ["", saving_sentence(summary["claims"]["compute_saving"])]
    if summary["claims"].get("latency_goal"):
        lines += ["", latency_sentence(summary["claims"]["latency_goal"])]
    if summary.get("rl_fixed_children"):
        lines += ["", fixed_children_sentence(summary["rl_fixed_children"])]
    if summary.get("depth"):
        lines += ["", "Depth: APR minus SoS+ on each task (the claims' headline rows).", "", depth_markdown(summary["depth"])]
    seeds = ", ".join(f"{role.replace('_', ' ')} {len(entries)}" for role, entries in summary["models"].items())
    lines += ["", f"Training seeds evaluated: {seeds}."]
    if summary["missing"]:
        lines.append(f"Not evaluated: {'; '.join(summary['missing'])}.")
    return "\n".join(lines)
