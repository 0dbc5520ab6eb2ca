"""The SFT sweep: which configuration learns Countdown on a 2-core CPU, measured, not guessed.

Every point trains a SoS+ model on the ``cpu`` profile's data with one lever changed from ``base``
(the ``cpu`` configuration with the 1,024-token context it had when the sweep ran: 4 layers x 128,
digit tokens, lr 3e-3, 2 packed 1,024-token blocks per step, 1,500 training problems, 3 numbers) for
the same token budget, and logs verified success on 100 held-out problems against tokens seen.
Levers: number tokenization, task size, width and depth, learning rate, batch, data size.

Run (each point resumes after a kill and is skipped once finished; at the default budget a 4 x 128
point takes 16 to 26 minutes and a 2M-parameter one about 50, so run it in the background; two
processes with ``--threads 1`` and different ``--points`` side by side get more done on 2 cores)::

    python experiments/sft_sweep.py --points all --budget 8000000 --threads 2
    python experiments/sft_sweep.py --report      # table + curves of the finished points

``--report`` writes ``data/sft-sweep/results.json`` (every curve and the table, which notebook 03
plots) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from apr_mini.config import PROFILES
from apr_mini.data import build_dataset, load_problems
from apr_mini.models import MODEL_PRESETS, ModelPreset
from apr_mini.sft import SFTRun, train

RUNS = Path("runs/sweep")
RESULTS = Path("data/sft-sweep/results.json")
CPU = PROFILES["cpu"]
DATASETS = {  # name -> profile whose data a point trains on
    "cpu": CPU,
    "cpu-500": CPU.replace(data=replace(CPU.data, n_train=500)),
    "cpu-4-numbers": CPU.replace(task=replace(CPU.task, n_numbers=4)),
    "cpu-range-24": CPU.replace(task=replace(CPU.task, max_number=24, max_target=72)),
}
MODEL_PRESETS.update({  # the points keep the 1,024-token context they were run with (the cpu preset now has 768)
    "sweep-4x128": replace(MODEL_PRESETS["cpu"], context=1024),
    "sweep-4x192": ModelPreset(n_layers=4, hidden=192, n_heads=6, ffn=768, context=1024),
    "sweep-8x128": ModelPreset(n_layers=8, hidden=128, n_heads=4, ffn=512, context=1024),
})
POINTS = {  # name -> (what changes, SFTRun fields, dataset)
    "base": ("nothing (the cpu configuration, 1,024-token context)", {}, "cpu"),
    "integer-tokens": ("one token per integer instead of per digit", {"numbers": "integers"}, "cpu"),
    "4-numbers": ("4 numbers instead of 3 (task size)", {}, "cpu-4-numbers"),
    "range-24": ("numbers in 1..24, targets 10..72 instead of 1..12, 10..36 (task size)", {}, "cpu-range-24"),
    "wide-4x192": ("width 192 instead of 128", {"model": "sweep-4x192"}, "cpu"),
    "deep-8x128": ("8 layers instead of 4", {"model": "sweep-8x128"}, "cpu"),
    "lr-1e-3": ("learning rate 1e-3 instead of 3e-3", {"lr": 1e-3}, "cpu"),
    "lr-6e-3": ("learning rate 6e-3 instead of 3e-3", {"lr": 6e-3}, "cpu"),
    "batch-4": ("4 blocks per step instead of 2", {"grad_accum": 4}, "cpu"),
    "data-500": ("500 training problems instead of 1,500", {}, "cpu-500"),
}
# the first points stopped near 7.5M tokens (their step count assumed full packed blocks), later ones at 8M,
# so the table also compares every point at the curve point nearest 7.5M
COMPARE_AT = 7_500_000
COMPARE_KEY = f"verified_at_{COMPARE_AT / 1e6:g}M"


def dataset_dir(name: str, workers: int) -> Path:
    folder = RUNS / f"data-{name}"
    if not (folder / "manifest.json").exists():
        build_dataset(DATASETS[name], folder, workers=workers, progress=False,
                      command=f"python experiments/sft_sweep.py (dataset {name})")
    return folder


def run_point(name: str, budget: int, threads: int) -> dict:
    change, fields, dataset = POINTS[name]
    data = dataset_dir(dataset, threads)
    run = SFTRun(kind="sosp", max_tokens=budget, threads=threads, eval_problems=100, **{"model": "sweep-4x128", **fields})
    steps = budget // (run.batch_size * run.grad_accum * MODEL_PRESETS[run.model].context)
    run = replace(run, eval_every=max(1, steps // 6))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return train(run, data, RUNS / name, val_problems=load_problems(data / "problems_val.jsonl"), command=command)


def report() -> dict:
    points = []
    for name, (change, fields, dataset) in POINTS.items():
        curve_path, metrics_path = RUNS / name / "curve.jsonl", RUNS / name / "metrics.json"
        if not curve_path.exists():
            continue
        # one point per step (a run stopped and resumed at its last step may have evaluated it twice)
        curve = list({p["step"]: p for p in map(json.loads, curve_path.read_text().splitlines())}.values())
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        nearest = min(curve, key=lambda p: abs(p["tokens"] - COMPARE_AT))
        verified_near = nearest["verified"] if abs(nearest["tokens"] - COMPARE_AT) <= 0.05 * COMPARE_AT else None
        points.append({"point": name, "change": change, "dataset": dataset, "finished": bool(metrics),
                       "parameters": metrics.get("parameters"), "tokens": curve[-1]["tokens"],
                       "final_loss": metrics.get("final_loss"), "verified": curve[-1]["verified"],
                       COMPARE_KEY: verified_near, "best_verified": max(p["verified"] for p in curve),
                       "task": DATASETS[dataset].task.__dict__,
                       "curve": [{"tokens": p["tokens"], "verified": p["verified"], "loss": p["loss"]} for p in curve]})
    results = {"command": "python experiments/sft_sweep.py --points all --budget 8000000 --threads 2",
               "points": points}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"| point | change | parameters | tokens | final loss | verified (last) | verified at {COMPARE_AT / 1e6:g}M "
          "| best | finished |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in points:
        parameters = f"{p['parameters']:,}" if p["parameters"] else ""
        loss = f"{p['final_loss']:.3f}" if p["final_loss"] is not None else ""
        near = f"{p[COMPARE_KEY]:.0%}" if p[COMPARE_KEY] is not None else "no curve point"
        print(f"| {p['point']} | {p['change']} | {parameters} | {p['tokens']:,} | {loss} | "
              f"{p['verified']:.0%} | {near} | {p['best_verified']:.0%} | {'yes' if p['finished'] else 'no'} |")
    print(f"wrote {RESULTS}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", nargs="+", default=[], help=f"'all' or some of: {', '.join(POINTS)}")
    parser.add_argument("--budget", type=int, default=8_000_000, help="training tokens per point")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only write the table and curves")
    args = parser.parse_args()
    names = list(POINTS) if args.points == ["all"] else args.points
    unknown = [n for n in names if n not in POINTS]
    if unknown:
        parser.error(f"unknown points {unknown}; choose from {list(POINTS)}")
    if not args.report:
        for name in names:
            run_point(name, args.budget, args.threads)
    report()


if __name__ == "__main__":
    main()
