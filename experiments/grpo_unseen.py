"""GRPO's gain on 3-number problems that no split holds: the fresh-problem check of the cpu task.

The cpu task has 1,934 distinct solvable problems (:func:`apr_mini.countdown.problem_space`); its
train and validation splits hold 1,700 of them, and every GRPO setting was chosen on validation.
The other 234 are problems no training run and no choice has seen: too few for a test split, enough
for a paired check. This writes them to ``data/countdown-cpu/problems_outside.jsonl`` (each
problem's numbers in a seeded random order, as the splits have them), evaluates each (SFT, GRPO)
pair greedily through the engine on them (resumable records in ``runs/unseen/``), and writes each
pair's paired difference to ``data/grpo/unseen.json``. ``--sorted`` presents the same problems with
their numbers in ascending order instead (``problem_space``'s own order; records in
``runs/unseen/sorted/``, results in ``data/grpo/unseen-sorted.json``): does a gain depend on how
the numbers are listed?

Run:  python experiments/grpo_unseen.py [--pairs SFT:GRPO ...] [--sorted] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = ROOT / "data" / "countdown-cpu" / "problems_outside.jsonl"
OUT = ROOT / "data" / "grpo" / "unseen.json"
PAIRS = {  # method: (SFT, GRPO) per training seed, as shipped (APR: dr_grpo), then APR's earlier grpo-loss runs
    "apr": [("data/cpu-apr", "data/seeds/cpu-apr-grpo-seed0-drgrpo"),
            ("data/seeds/cpu-apr-seed1", "data/seeds/cpu-apr-grpo-seed1-drgrpo"),
            ("data/seeds/cpu-apr-seed2", "data/seeds/cpu-apr-grpo-seed2-drgrpo"),
            ("data/cpu-apr", "data/cpu-apr-grpo"), ("data/seeds/cpu-apr-seed2", "data/seeds/cpu-apr-grpo-seed2")],
    "sosp": [("data/cpu-sosp", "data/cpu-sosp-grpo"), ("data/seeds/cpu-sosp-seed1", "data/seeds/cpu-sosp-grpo-seed1"),
             ("data/seeds/cpu-sosp-seed2", "data/seeds/cpu-sosp-grpo-seed2")],
}
ACROSS = [  # (SoS+ GRPO, APR GRPO) of the same SFT seed: after RL, does APR beat SoS+ on fresh problems?
    ("data/cpu-sosp-grpo", "data/seeds/cpu-apr-grpo-seed0-drgrpo"),
    ("data/seeds/cpu-sosp-grpo-seed1", "data/seeds/cpu-apr-grpo-seed1-drgrpo"),
    ("data/seeds/cpu-sosp-grpo-seed2", "data/seeds/cpu-apr-grpo-seed2-drgrpo"),
]


def outside_problems() -> list:
    """The task's solvable problems in neither split, numbers shuffled by a fixed seed."""
    from apr_mini.config import get_profile
    from apr_mini.countdown import Problem, problem_space
    from apr_mini.data import load_problems

    split = ROOT / "data" / "countdown-cpu"
    seen = {p.key for name in ("train", "val") for p in load_problems(split / f"problems_{name}.jsonl")}
    rng = random.Random("outside")
    return [Problem(tuple(rng.sample(p.nums, len(p.nums))), p.target)
            for p in problem_space(get_profile("cpu").task) if p.key not in seen]


def evaluate(checkpoint: str, method: str, problems: list, folder: Path) -> list[dict]:
    from apr_mini.inference import EvalSettings, checkpoint_fingerprint, open_backend, run_eval

    out = folder / f"{Path(checkpoint).name}.jsonl"
    return run_eval(open_backend(ROOT / checkpoint), problems, out, EvalSettings(method=method), progress=False,
                    model=checkpoint_fingerprint(ROOT / checkpoint))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="*", metavar="SFT:GRPO", help="only these pairs (default: every shipped one)")
    parser.add_argument("--sorted", action="store_true", help="numbers in ascending order (a presentation check)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    from apr_mini.stats import paired_difference

    if args.threads:
        torch.set_num_threads(args.threads)
    from apr_mini.countdown import Problem

    problems = outside_problems()
    PROBLEMS.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
    folder, out = ROOT / "runs" / "unseen", OUT
    if args.sorted:
        problems = [Problem(tuple(sorted(p.nums)), p.target) for p in problems]
        folder, out = folder / "sorted", OUT.with_name("unseen-sorted.json")
    chosen = {tuple(pair.split(":")) for pair in args.pairs or ()}
    # a run with --pairs keeps the other pairs' results, as long as they are still among PAIRS and ACROSS
    earlier = json.loads(out.read_text()) if out.exists() else {}
    results = {key: d for key, d in earlier.get("pairs", {}).items()
               if tuple(key.split(" -> ")) in {pair for pairs in PAIRS.values() for pair in pairs}}
    across = {key: d for key, d in earlier.get("apr_minus_sosp_after_grpo", {}).items()
              if tuple(key.split(" - ")[::-1]) in set(ACROSS)}

    def save() -> None:  # after each pair: a stopped run keeps what it finished
        out.write_text(json.dumps({"problems": str(PROBLEMS.relative_to(ROOT)), "n": len(problems),
                                   "numbers": "ascending" if args.sorted else "as in the file",
                                   "command": "python experiments/grpo_unseen.py" + (" --sorted" if args.sorted else ""),
                                   "pairs": results, "apr_minus_sosp_after_grpo": across}, indent=1) + "\n")

    for method, pairs in PAIRS.items():
        for sft, grpo in pairs:
            if chosen and (sft, grpo) not in chosen or not (ROOT / grpo / "config.json").exists():
                continue
            d = paired_difference(evaluate(sft, method, problems, folder), evaluate(grpo, method, problems, folder))
            results[f"{sft} -> {grpo}"] = {"method": method, **d}
            print(f"{method}: {grpo} minus {sft} on {d['n']} unseen problems: {d['after']:.1%} - {d['before']:.1%} = "
                  f"{d['difference']:+.1%} (SE {d['se']:.1%})", flush=True)
            save()
    for sosp, apr in ACROSS:
        if all((folder / f"{Path(c).name}.jsonl").exists() for c in (sosp, apr)):  # both evaluated above
            d = paired_difference(evaluate(sosp, "sosp", problems, folder), evaluate(apr, "apr", problems, folder))
            across[f"{apr} - {sosp}"] = d
            print(f"after GRPO: {apr} minus {sosp}: {d['difference']:+.1%} (SE {d['se']:.1%})", flush=True)
            save()


if __name__ == "__main__":
    main()
