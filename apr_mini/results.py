"""The paper's three claims at our scale: accuracy against context window, total tokens and latency.

Paper abstract and section 5: APR beats SoS+ (1) within the same context window, (2) at the same
total tokens, against SoS+'s pass@k and majority@k, and (3) at the same wall-clock latency; RL adds
accuracy and makes the search wider. ``python -m apr_mini reproduce`` (``make reproduce``) measures
all of it through the spawn/join engine and writes ``summary.json`` and the figures:

- **context**: every model (SFT seeds, GRPO) at each window of ``windows``. A greedy SoS+ trace cut
  at a smaller window is the same trace up to there, so SoS+ runs once, at the largest window, and
  the smaller ones are derived (:func:`apr_mini.inference.smaller_contexts`); one real run at
  ``derivation_window`` checks that. APR runs at every window: a cut-off child can still leave its
  parent a way on, so nothing is derived.
- **compute**: the budget-conditioned models at each budget (greedy), and ``max(ks)`` samples per
  problem from the SFT models for pass@k and majority@k (the first k samples).
- **latency**: the greedy points again on the first problems, one problem at a time (the paper's
  setting), in back-to-back rounds that alternate the methods, since this machine's speed drifts;
  with the critical-path floor (the tokens decoded one after another on the critical path, times the
  single-stream time per decoded token).

Every run is a resumable records file (:func:`apr_mini.inference.run_eval`): a killed reproduction
loses no finished problem and a second one adds only what is missing. Accuracies come with a 95%
bootstrap interval that resamples problems and training seeds (:func:`bootstrap_mean`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import mean, median

from tqdm.auto import tqdm

from .attribution import loss_attribution
from .config import ReproduceConfig, UserFacingError
from .data import load_problems
from .engine import Limits
from .inference import EvalSettings, checkpoint_fingerprint, fits_window, problem_rows
from .stats import bootstrap_difference, bootstrap_mean, paired_difference
from . import trace_language as tl

ROLES = ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo", "sosp_budget", "apr_budget")
LABELS = {"sosp_sft": "SoS+", "apr_sft": "APR", "sosp_grpo": "SoS+ GRPO", "apr_grpo": "APR GRPO",
          "sosp_budget": "SoS+ token budget", "apr_budget": "APR sub-call budget"}
PAPER = {  # abstract and section 5: APR and SoS+ accuracy (%)
    "context": {"setting": "4k-token context", "apr": 83.4, "sosp": 60.0},
    "compute": {"setting": "20k total tokens", "apr": 80.1, "sosp": 66.6},
    "latency": {"setting": "about 5,000 ms", "apr": 75.2, "sosp": 57.3},
    "rl": {"before": 75.5, "after": 83.4, "children": 34.4, "longest_sequence": 22.1},
    "compute_saving_vs_pass8": 57.4,
}


# ---------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One engine run: a model (role and seed) on problems under one setting."""

    role: str
    seed: int
    name: str                      # e.g. "window-512", "budget-4", "samples-8", "latency-r0-greedy"
    settings: EvalSettings
    n_problems: int
    max_live: int = 64

    @property
    def method(self) -> str:
        return self.role.split("_")[0]


def available_models(config: ReproduceConfig) -> tuple[dict[str, list[str]], list[str]]:
    """The checkpoints of each role that exist, and those that don't (reported as missing, with the
    step where a GRPO run collapsed when its ``collapsed.json`` is there instead of a model)."""
    present, missing = {}, []
    for role in ROLES:
        present[role] = [c for c in getattr(config, role) if (Path(c) / "config.json").exists()]
        for absent in (c for c in getattr(config, role) if c not in present[role]):
            collapse = Path(absent) / "collapsed.json"
            step = json.loads(collapse.read_text())["collapsed_at_step"] if collapse.exists() else None
            missing.append(f"{absent} (its GRPO run collapsed at step {step})" if step else absent)
    return present, missing


def _greedy(method: str, context: int, prefix: str = "") -> EvalSettings:
    return EvalSettings(method=method, prefix=prefix, limits=Limits(context=context))


def plan(config: ReproduceConfig, models: dict[str, list[str]]) -> list[Run]:
    """Every engine run of the reproduction, grouped by model (each model is loaded once)."""
    full, n = config.windows[-1], config.n_problems
    runs = []
    for role, checkpoints in models.items():
        method = role.split("_")[0]
        for seed, _ in enumerate(checkpoints):
            if role in ("sosp_sft", "sosp_grpo"):
                runs.append(Run(role, seed, f"window-{full}", _greedy(method, full), n))
                if role == "sosp_sft" and seed == 0:
                    window = config.derivation_window
                    runs.append(Run(role, seed, f"window-{window}", _greedy(method, window), n))
            elif role in ("apr_sft", "apr_grpo"):
                runs += [Run(role, seed, f"window-{w}", _greedy(method, w), n) for w in config.windows]
            else:
                kind, budgets = ("tokens", config.token_budgets) if method == "sosp" else \
                    ("sub_calls", config.sub_call_budgets)
                runs += [Run(role, seed, f"budget-{b}", _greedy(method, full, tl.condition_prefix(kind, b)), n)
                         for b in budgets]
            if role in ("sosp_sft", "apr_sft") and seed < config.sample_seeds and max(config.ks) > 1:
                sampled = EvalSettings(method=method, samples=max(config.ks), temperature=config.temperature,
                                       seed=seed, limits=Limits(context=full))
                runs.append(Run(role, seed, f"samples-{max(config.ks)}", sampled, n))
    return runs


def latency_plan(config: ReproduceConfig, runs: list[Run]) -> list[Run]:
    """The timed runs: each greedy point of seed 0 on the first ``latency_problems`` problems, one
    problem at a time; rounds one after the other, SoS+ and APR points alternating within a round."""
    points = [r for r in runs if r.seed == 0 and r.settings.samples == 1
              and (r.name.startswith("budget") or r.name == f"window-{config.windows[-1]}")]
    sosp = [r for r in points if r.method == "sosp"]
    apr = [r for r in points if r.method == "apr"]
    order = [r for pair in zip(sosp, apr) for r in pair] + sosp[len(apr):] + apr[len(sosp):]
    return [replace(r, name=f"latency-r{k}-{r.name}", n_problems=config.latency_problems, max_live=1)
            for k in range(config.latency_rounds) for r in order]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def records_path(config: ReproduceConfig, run: Run) -> Path:
    return Path(config.records) / f"{run.role}-seed{run.seed}" / f"{run.name}.jsonl"


def execute(config: ReproduceConfig, models: dict[str, list[str]], runs: list[Run], fingerprints: dict[str, str], *,
            progress: bool = True) -> None:
    """Do every run whose records are not complete, loading each model once (``fingerprints``: each
    checkpoint's :func:`~apr_mini.inference.checkpoint_fingerprint`)."""
    from .engine import run_problems
    from .inference import open_backend, run_eval, run_is_complete

    problems = load_problems(config.problems)[: config.n_problems]
    todo = [r for r in runs if not run_is_complete(records_path(config, r), problems[: r.n_problems], r.settings,
                                                   fingerprints[models[r.role][r.seed]])]
    backends: dict[tuple[str, int], object] = {}
    warm: set[tuple[str, int]] = set()
    with tqdm(total=len(runs), initial=len(runs) - len(todo), desc="reproduce", disable=not progress) as bar:
        for run in todo:
            checkpoint = models[run.role][run.seed]
            key = (run.role, run.seed)
            if key not in backends:
                if run.max_live > 1:
                    backends.clear()  # one model in memory at a time, except for the timed rounds that alternate
                backends[key] = open_backend(checkpoint, max_batch=config.max_batch)
            if run.max_live == 1 and key not in warm:  # a model's first call pays one-off costs: keep them off the clock
                run_problems(backends[key], problems[:1], limits=run.settings.engine_limits(), prefix=run.settings.prefix)
                warm.add(key)
            bar.set_postfix_str(f"{run.role} seed {run.seed} {run.name}")
            run_eval(backends[key], problems[: run.n_problems], records_path(config, run), run.settings,
                     max_live=run.max_live, progress=False, model=fingerprints[checkpoint])
            bar.update()


def load_records(config: ReproduceConfig, run: Run) -> list[dict]:
    from .data import read_jsonl

    return read_jsonl(records_path(config, run))


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

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


def _context_points(config, runs, models) -> tuple[list[dict], dict | None]:
    points, check = [], None
    full = config.windows[-1]
    for role in ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo"):
        seeds = range(len(models[role]))
        if not models[role]:
            continue
        if role.startswith("sosp"):
            records = [[r for r in load_records(config, _find(runs, role, s, f"window-{full}"))] for s in seeds]
            for w in config.windows:
                rows = [[{"accuracy": r["verified"] and fits_window(r, w)} for r in sorted(recs, key=lambda r: r["id"])]
                        for recs in records]
                points.append(_point(config, role, f"window-{w}", rows, claim="context", window=w, derived=w != full))
            if role == "sosp_sft":
                window = config.derivation_window
                real = load_records(config, _find(runs, role, 0, f"window-{window}"))
                derived = {r["id"]: bool(r["verified"] and fits_window(r, window)) for r in records[0]}
                agree = sum(derived[r["id"]] == bool(r["verified"]) for r in real)
                check = {"window": window, "n": len(real), "agree": agree,
                         "derived": round(mean(derived.values()), 4),
                         "real": round(mean(float(r["verified"]) for r in real), 4)}
        else:
            for w in config.windows:
                rows = [problem_rows(load_records(config, _find(runs, role, s, f"window-{w}"))) for s in seeds]
                points.append(_point(config, role, f"window-{w}", rows, claim="context", window=w, derived=False))
    return points, check


def _find(runs: list[Run], role: str, seed: int, name: str) -> Run:
    return next(r for r in runs if (r.role, r.seed, r.name) == (role, seed, name))


def _compute_points(config, runs, models) -> list[dict]:
    points = []
    for role in ("sosp_budget", "apr_budget"):
        budgets = config.token_budgets if role == "sosp_budget" else config.sub_call_budgets
        for budget in budgets if models[role] else ():
            rows = [problem_rows(load_records(config, _find(runs, role, s, f"budget-{budget}")))
                    for s in range(len(models[role]))]
            points.append(_point(config, role, f"budget-{budget}", rows, claim="compute", budget=budget,
                                 series=LABELS[role]))
    for role in ("sosp_sft", "apr_sft"):
        seeds = [s for s in range(min(config.sample_seeds, len(models[role])))]
        if not seeds or max(config.ks) == 1:
            continue
        records = [load_records(config, _find(runs, role, s, f"samples-{max(config.ks)}")) for s in seeds]
        stats = [("pass_at_n", "pass@k"), ("majority", "majority@k")] if role == "sosp_sft" else [("majority", "majority@k")]
        for stat, series in stats:
            for k in config.ks:
                rows = [problem_rows([r for r in recs if r["sample"] < k]) for recs in records]
                points.append(_point(config, role, f"{series.replace('k', str(k))}", rows, stat, claim="compute",
                                     k=k, series=f"{LABELS[role]} {series}"))
    for role in ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo"):
        if models[role]:
            rows = [problem_rows(load_records(config, _find(runs, role, s, f"window-{config.windows[-1]}")))
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


def _latency_points(config, runs, timed) -> list[dict]:
    """Median over rounds of each point's mean latency, and the critical-path floor."""
    rounds = {}
    for run in timed:
        rounds.setdefault(int(run.name.split("-")[1][1:]), []).append(run)
    per_token = []
    for round_runs in rounds.values():  # single-stream seconds per decoded token: a SoS+ search alone is one stream
        sosp = [r for run in round_runs if run.method == "sosp" for r in load_records(config, run)]
        per_token.append(sum(r["metrics"]["latency_s"] for r in sosp) / max(1, sum(decoded_path(r["tree"]) for r in sosp)))
    points = []
    for run in [r for r in timed if r.name.startswith("latency-r0-")]:
        base = run.name.split("-", 2)[2]
        records = [load_records(config, replace(run, name=f"latency-r{k}-{base}")) for k in rounds]
        samples = [problem_rows(recs) for recs in records]
        rows = problem_rows(load_records(config, _find(runs, run.role, 0, base)))
        floor = [mean(decoded_path(r["tree"]) for r in recs) * t for recs, t in zip(records, per_token)]
        points.append(_point(config, run.role, base, [rows], claim="latency", series=LABELS[run.role],
                             timed_problems=config.latency_problems,
                             latency_alone_s=round(median(mean(r["latency_s"] for r in rs) for rs in samples), 4),
                             latency_rounds=[round(mean(r["latency_s"] for r in rs), 4) for rs in samples],
                             floor_s=round(median(floor), 4), seconds_per_token=round(median(per_token), 6)))
    return points


def grpo_pairs(models: dict[str, list[str]], fingerprints: dict[str, str], method: str) -> list[tuple[int, int]]:
    """(SFT seed, GRPO seed) for each GRPO model whose ``metrics.json`` names, by fingerprint, the SFT
    model it started from: RL's before/after compares each run with its own starting point."""
    sft = [fingerprints[c] for c in models[f"{method}_sft"]]
    pairs = []
    for g, checkpoint in enumerate(models[f"{method}_grpo"]):
        metrics = Path(checkpoint) / "metrics.json"
        source = json.loads(metrics.read_text()).get("source_fingerprint") if metrics.exists() else None
        if source in sft:
            pairs.append((sft.index(source), g))
    return pairs


def _rl(config, runs, models, fingerprints) -> dict:
    """RL before/after for each method: the per-problem differences of every (SFT, GRPO) pair, as a
    seeds x problems matrix, so the interval resamples both problems and training seeds."""
    out = {}
    full = f"window-{config.windows[-1]}"
    for method in ("sosp", "apr"):
        pairs = grpo_pairs(models, fingerprints, method)
        if not pairs:
            continue
        before = [load_records(config, _find(runs, f"{method}_sft", s, full)) for s, _ in pairs]
        after = [load_records(config, _find(runs, f"{method}_grpo", g, full)) for _, g in pairs]
        b = [problem_rows(records) for records in before]
        a = [problem_rows(records) for records in after]
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
        out[method] = {"accuracy": accuracy,
                       "relative_change_percent": {c: relative(c) for c in ("children", "longest_sequence", "total_tokens")},
                       "per_seed": [{"sft": models[f"{method}_sft"][s], "grpo": models[f"{method}_grpo"][g],
                                     **paired_difference(seed_before, seed_after)}
                                    for (s, g), seed_before, seed_after in zip(pairs, before, after)]}
    return out


def _side(point: dict | None) -> dict | None:
    keys = ("label", "name", "accuracy", "ci95", "seeds", "n", "total_tokens", "latency_alone_s")
    return {k: point[k] for k in keys if k in point} if point else None


def _claim(config, claim: str, setting: str, apr: dict | None, sosp: dict | None) -> dict:
    row = {"claim": claim, "setting": setting, "paper": PAPER.get(claim), "apr": _side(apr), "sosp": _side(sosp)}
    if apr and sosp:
        row["difference"] = bootstrap_difference(_matrix(apr), _matrix(sosp), config.bootstrap)
        row["reproduces"] = row["difference"]["ci95"][0] > 0
    return row


def _best(points: list[dict], method: str, key: str, limit: float) -> dict | None:
    fitting = [p for p in points if p["method"] == method and p.get(key) is not None and p[key] <= limit]
    return max(fitting, key=lambda p: (p["accuracy"], -p[key]), default=None)


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
                       _best(deployable, "apr", "total_tokens", budget), _best(deployable, "sosp", "total_tokens", budget)))
    sosp_greedy = next((p for p in latency if p["role"] == "sosp_sft"), None)
    if sosp_greedy:
        limit = sosp_greedy["latency_alone_s"]
        rows.append(_claim(config, "latency", f"at most {limit:.2f} s per problem (SoS+'s greedy latency)",
                           _best(latency, "apr", "latency_alone_s", limit), _best(latency, "sosp", "latency_alone_s", limit)))
    return {"rows": rows, "compute_saving": compute_saving(compute, max(config.ks))}


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


def _losses(config, runs, models) -> dict:
    """Where each model loses at the models' own window (:func:`apr_mini.attribution.loss_attribution`),
    one table per training seed."""
    full = f"window-{config.windows[-1]}"
    return {role: [loss_attribution(load_records(config, _find(runs, role, s, full))) for s in range(len(seeds))]
            for role, seeds in models.items() if seeds and not role.endswith("_budget")}


def summarize_reproduction(config: ReproduceConfig, models: dict[str, list[str]], fingerprints: dict[str, str],
                           missing: list[str], runs: list[Run], timed: list[Run], command: str = "") -> dict:
    context, check = _context_points(config, runs, models)
    compute = _compute_points(config, runs, models)
    latency = _latency_points(config, runs, timed) if timed else []
    return {
        "command": command, "config": asdict(config),
        "models": {role: [{"checkpoint": c, "fingerprint": fingerprints[c]} for c in cs]
                   for role, cs in models.items()},
        "missing": missing, "paper": PAPER,
        "claims": claims(config, context, compute, latency), "derivation_check": check,
        "rl": _rl(config, runs, models, fingerprints), "context": context, "compute": compute, "latency": latency,
        "losses": _losses(config, runs, models),
    }


def reproduce(config: ReproduceConfig, *, progress: bool = True, command: str = "", figures: bool = True,
              latency: bool = True) -> dict:
    """Run (or resume) every evaluation, then write ``summary.json`` and the figures to ``config.out``.
    ``latency=False`` leaves out the timed rounds, which need the machine to themselves."""
    models, missing = available_models(config)
    if not (models["sosp_sft"] and models["apr_sft"]):
        raise UserFacingError(f"reproduce needs at least the SFT models; missing: {', '.join(missing)}")
    if not Path(config.problems).exists():
        raise UserFacingError(f"no problems file at {config.problems}")
    runs = plan(config, models)
    timed = latency_plan(config, runs) if latency else []
    start = time.time()
    fingerprints = {c: checkpoint_fingerprint(c) for checkpoints in models.values() for c in checkpoints}
    execute(config, models, runs + timed, fingerprints, progress=progress)
    summary = summarize_reproduction(config, models, fingerprints, missing, runs, timed, command)
    summary["seconds_this_session"] = round(time.time() - start, 1)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "claims.md").write_text(claims_markdown(summary) + "\n")
    save_trees(config, models, runs, out / "trees")
    if figures:
        from .plots import write_claim_figures

        write_claim_figures(summary, out)
    return summary


def save_trees(config: ReproduceConfig, models: dict[str, list[str]], runs: list[Run], folder: Path) -> None:
    """The first seed's records at the full window, gzipped (trees for the explorer): the per-problem
    view of notebook 06 opens them without the records folder."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for role in ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo"):
        if models[role]:
            run = _find(runs, role, 0, f"window-{config.windows[-1]}")
            with open(folder / f"{role}.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                f.write(records_path(config, run).read_bytes())


def load_trees(results_dir: str | Path, role: str) -> list[dict]:
    """The records :func:`save_trees` wrote for ``role`` (e.g. ``"apr_sft"``), in problem order."""
    import gzip

    with gzip.open(Path(results_dir) / "trees" / f"{role}.jsonl.gz", "rt") as f:
        return sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["id"])


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
    def pct(side):
        if not side:
            return "not measured"
        low, high = side["ci95"]
        return f"{100 * side['accuracy']:.1f}% ({100 * low:.1f}-{100 * high:.1f}), {side['label']}, {side['seeds']} seed(s)"

    lines = ["| claim | paper: APR / SoS+ | setting here | APR (95% CI) | SoS+ (95% CI) | APR - SoS+ (95% CI) |",
             "|---|---|---|---|---|---|"]
    for row in summary["claims"]["rows"]:
        paper = f"{row['paper']['apr']}% / {row['paper']['sosp']}% ({row['paper']['setting']})"
        diff = row.get("difference")
        gap = (f"{100 * diff['difference']:+.1f} ({100 * diff['ci95'][0]:+.1f} to {100 * diff['ci95'][1]:+.1f})"
               + (", within noise" if diff["within_noise"] else "")) if diff else "n/a"
        lines.append(f"| {row['claim']} | {paper} | {row['setting']} | {pct(row['apr'])} | {pct(row['sosp'])} | {gap} |")
    if summary["claims"]["compute_saving"]:
        lines += ["", saving_sentence(summary["claims"]["compute_saving"])]
    seeds = ", ".join(f"{role.replace('_', ' ')} {len(entries)}" for role, entries in summary["models"].items())
    lines += ["", f"Training seeds evaluated: {seeds}."]
    if summary["missing"]:
        lines.append(f"Not evaluated: {'; '.join(summary['missing'])}.")
    return "\n".join(lines)
