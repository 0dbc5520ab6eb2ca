"""Do the deep GRPO runs' validation figures hold on the whole validation split?

``grpo --ship`` judges a run on the first 50 validation problems, and every deep APR recipe tried lost
16 to 20 points there (docs/training.md), while the test split (100 problems, ``reproduce --profile
cpu4``) gave the three shipped seeds -3, +6 and -11. Fifty problems are a small sample, and the
first 50 are where the seed-0 SFT model happens to do well. This evaluates each (SFT, GRPO) pair
greedily through the engine on all 200 validation problems (records in ``runs/val200/``, resumable,
with ``infer --method apr``'s settings, so ``infer ... --out runs/val200/NAME.jsonl`` runs are reused),
and writes each pair's paired difference on all of them, on the first 50 (the slice the recipes were
judged on) and on the other 150, and the three shipped seeds pooled, to ``data/grpo/cpu4-validation.json``.

Run:  python experiments/deep_validation.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = ROOT / "data" / "countdown-cpu4" / "problems_val.jsonl"
OUT = ROOT / "data" / "grpo" / "cpu4-validation.json"
RECORDS = ROOT / "runs" / "val200"
JUDGED = 50  # grpo --ship's validation problems (the first ones of the split)
SHIPPED = {  # (SFT, GRPO) per training seed, the cpu4 preset, as reproduce --profile cpu4 reports them
    "seed 0": ("data/cpu4-apr", "data/cpu4-apr-grpo"),
    "seed 1": ("data/seeds/cpu4-apr-seed1", "data/seeds/cpu4-apr-grpo-seed1"),
    "seed 2": ("data/seeds/cpu4-apr-seed2", "data/seeds/cpu4-apr-grpo-seed2"),
}
CANDIDATES = {  # recipes judged on the first 50 and not shipped, whose weights are committed
    "seed 0, --learning-rate 3e-5": ("data/cpu4-apr", "data/grpo/cpu4-apr-lr3e-5"),
}


def slices(before: list[dict], after: list[dict], judged: int = JUDGED) -> dict:
    """Paired differences (after minus before, records of problems ``0..n-1`` by id) on every problem,
    on the first ``judged`` and on the rest."""
    from apr_mini.stats import paired_difference

    def part(keep) -> dict:
        return paired_difference([r for r in before if keep(r["id"])], [r for r in after if keep(r["id"])])

    return {"all": part(lambda i: True), f"first {judged}": part(lambda i: i < judged),
            "rest": part(lambda i: i >= judged)}


def evaluate(checkpoint: str, problems: list) -> list[dict]:
    from apr_mini.inference import EvalSettings, checkpoint_fingerprint, open_backend, run_eval

    return run_eval(open_backend(ROOT / checkpoint), problems, RECORDS / f"{Path(checkpoint).name}.jsonl",
                    EvalSettings(method="apr"), progress=False, model=checkpoint_fingerprint(ROOT / checkpoint))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="validation problems (the split has 200)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.n <= JUDGED:
        parser.error(f"--n must be larger than the {JUDGED} problems the recipes were judged on")
    import torch

    from apr_mini.data import load_problems
    from apr_mini.stats import bootstrap_difference

    if args.threads:
        torch.set_num_threads(args.threads)
    problems = load_problems(PROBLEMS)[:args.n]
    report = {"problems": str(PROBLEMS.relative_to(ROOT)), "n": len(problems), "judged_on": f"the first {JUDGED}",
              "decoding": "greedy, through the engine", "command": "python experiments/deep_validation.py",
              "pairs": {}}
    verified = {}
    for name, (sft, grpo) in {**SHIPPED, **CANDIDATES}.items():
        before, after = evaluate(sft, problems), evaluate(grpo, problems)
        verified[name] = ([r["verified"] for r in before], [r["verified"] for r in after])
        report["pairs"][name] = {"sft": sft, "grpo": grpo, "shipped": name in SHIPPED, **slices(before, after)}
        whole = report["pairs"][name]["all"]
        print(f"{name}: {grpo} minus {sft} on {whole['n']} validation problems: {whole['after']:.1%} - "
              f"{whole['before']:.1%} = {whole['difference']:+.1%} (SE {whole['se']:.1%})", flush=True)
    # the shipped seeds pooled: problems resampled once for both sides, each side's seeds on their own
    report["shipped_pooled"] = bootstrap_difference([verified[s][1] for s in SHIPPED], [verified[s][0] for s in SHIPPED])
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"pooled over the shipped seeds: {report['shipped_pooled']['difference']:+.1%} "
          f"(95% CI {report['shipped_pooled']['ci95'][0]:+.1%} to {report['shipped_pooled']['ci95'][1]:+.1%}); "
          f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
