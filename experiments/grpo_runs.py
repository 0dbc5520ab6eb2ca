"""The GRPO runs on the cpu models: the two shipped ones and the variants tried beside them.

Every point runs ``apr_mini.grpo_train.train`` from a shipped SFT model (``data/cpu-apr`` or
``data/cpu-sosp``) with the ``cpu`` GRPO preset and one change: learning rate, reward, advantage
rule. Each logs its curve (greedy accuracy on 100 held-out problems every 10 steps) to its run
folder; the two shipped points are docs/training.md's commands, run with ``--ship``.

Run (a point resumes after a kill and is skipped once finished; a point takes 35-60 minutes on one
thread, so run two processes side by side with different ``--points``)::

    python experiments/grpo_runs.py --points apr-lr-3e-4 --threads 1
    python experiments/grpo_runs.py --report     # writes data/grpo/results.json, prints the table

``--report`` writes ``data/grpo/results.json`` (every curve and the table, which notebook 05 shows).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

RESULTS = Path("data/grpo/results.json")
TRAIN = Path("data/countdown-cpu/problems_train.jsonl")
POINTS = {  # name -> (what changes, kind, run folder, GRPOConfig changes)
    "sosp-binary": ("SoS+ with the cpu preset (shipped as data/cpu-sosp-grpo)", "sosp", "runs/cpu/grpo-sosp", {}),
    "apr-binary": ("APR with the cpu preset", "apr", "runs/cpu/grpo-apr", {}),
    "apr-lr-3e-4": ("learning rate 3e-4 instead of 1e-4", "apr", "runs/grpo/apr-lr-3e-4", {"learning_rate": 3e-4}),
    "apr-beta-0.04": ("KL weight beta 0.04 instead of 0.001", "apr", "runs/grpo/apr-beta-0.04", {"beta": 0.04}),
    "apr-root-only": ("beta 0.04, only the root's calls trained (the children's calls give no gradient)", "apr",
                      "runs/grpo/apr-root-only", {"beta": 0.04, "trained_threads": "root"}),
    "sosp-beta-0.04": ("SoS+ with beta 0.04 (the shipped APR run's settings)", "sosp", "runs/grpo/sosp-beta-0.04",
                       {"beta": 0.04}),
    # ThreadWeaver's cap of 0.2 on 1 - critical path / total tokens binds for nearly every correct cpu APR tree
    # (the SFT model's mean is 0.42), so the capped bonus is a constant; uncapped, it ranks correct trees
    "apr-efficiency": ("beta 0.04, efficiency reward (ThreadWeaver's, uncapped) and mean-centred advantages", "apr",
                       "runs/grpo/apr-efficiency", {"beta": 0.04, "reward": "efficiency", "efficiency_cap": 1.0,
                                                    "scale_rewards": "none"}),
}


def run_point(name: str, threads: int) -> dict:
    import torch

    from apr_mini import grpo_train
    from apr_mini.config import get_grpo_config
    from apr_mini.data import load_problems

    _, kind, folder, changes = POINTS[name]
    torch.set_num_threads(threads)
    checkpoint = Path(f"data/cpu-{kind}")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return grpo_train.train(checkpoint, kind, load_problems(TRAIN), folder, get_grpo_config("cpu", **changes),
                      eval_problems=load_problems(checkpoint / "problems_val.jsonl"), command=command, progress=False)


def summarize_point(name: str) -> dict | None:
    change, kind, folder, changes = POINTS[name]
    curve_path = Path(folder) / "curve.jsonl"
    if not curve_path.exists():
        return None
    curve = [json.loads(line) for line in curve_path.read_text().splitlines() if line.strip()]
    evals = [p for p in curve if "eval" in p]
    metrics_path = Path(folder) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    first, last = evals[0]["eval"], evals[-1]["eval"]
    steps = [p for p in curve if p["step"] > 0]
    if metrics:
        status = "finished"
    elif steps and steps[-1]["well_formed"] < 0.5:  # the cpu preset's min_well_formed
        status = f"collapsed at step {steps[-1]['step']}"
    else:
        status = f"stopped at step {steps[-1]['step'] if steps else 0}"
    return {
        "run": name, "change": change, "kind": kind, "steps": steps[-1]["step"] if steps else 0, "status": status,
        "last_eval_step": evals[-1]["step"], "wall_minutes": round(metrics.get("wall_seconds", 0) / 60, 1) or None,
        "accuracy_before": first["accuracy"], "accuracy_after": last["accuracy"],
        "children_before": first["children"], "children_after": last["children"],
        "critical_path_before": first["critical_path"], "critical_path_after": last["critical_path"],
        "total_tokens_before": first["total_tokens"], "total_tokens_after": last["total_tokens"],
        "kl_last": steps[-1]["kl"] if steps else None, "curve": curve,
    }


def report() -> list[dict]:
    rows = [r for r in (summarize_point(name) for name in POINTS) if r is not None]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "python experiments/grpo_runs.py --report",
                                   "evaluation": "greedy, through the engine, first 100 validation problems",
                                   "runs": [{k: v for k, v in r.items() if k != "curve"} for r in rows],
                                   "curves": {r["run"]: r["curve"] for r in rows}}, indent=1) + "\n")
    print("| run | change | status | greedy accuracy, 100 held-out (at step) | children | critical path | "
          "total tokens | KL at the last step | minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['change']} | {r['status']} | {r['accuracy_before']:.0%} -> {r['accuracy_after']:.0%} "
              f"({r['last_eval_step']}) | {r['children_before']:.1f} -> {r['children_after']:.1f} | "
              f"{r['critical_path_before']:.0f} -> {r['critical_path_after']:.0f} | "
              f"{r['total_tokens_before']:.0f} -> {r['total_tokens_after']:.0f} | {r['kl_last']:.3f} | "
              f"{r['wall_minutes'] or ''} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", nargs="+", choices=sorted(POINTS) + ["all"], default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    for name in (list(POINTS) if "all" in args.points else args.points):
        run_point(name, args.threads)
    if args.report:
        report()


if __name__ == "__main__":
    main()
