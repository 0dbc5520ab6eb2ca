"""What RL buys at a fixed number of children, on the cpu task: accuracy before and after GRPO with
the number of children fixed by the prompt, beside the same before/after with free spawning.

The paper's appendix finds APR's RL gain near zero when 10 children are enforced (83.2% before, 83.3%
after), so its gain comes mostly from a wider search, not from better choices at one width. Here the
width is fixed by the sub-call budget model (``data/cpu-apr-budget``, which obeys ``Sub Call Budget:
N``) and its GRPO run on its own drawn budgets (``data/cpu-apr-budget-grpo``, made by ``grpo
--sub-call-budgets 3,4,5,6``). Both run greedily through the engine at every budget of the cpu
reproduction on its 200 validation problems (resumable records in the reproduction's records folder,
the same files ``reproduce`` reads), paired by :func:`apr_mini.rl_effects.rl_fixed_children`. The
free-spawning row is the cpu reproduction's own (``data/results/summary.json``, key ``rl``); where
each run's tokens go (the root's text after its join against a child's) says what RL changed at a
fixed width.
Writes ``data/grpo/fixed_children.json``. Neither model's settings were chosen on these problems beyond
what the shipped APR GRPO recipe was (its beta was picked on them).

Run:  python experiments/rl_fixed_children.py [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "grpo" / "fixed_children.json"
ROLES = ("apr_budget", "apr_budget_grpo")


def thread_lengths(records: list[dict]) -> dict:
    """Where a run's tokens go: the mean length of the root's last call (prompt, spawn and join
    included), of the root's own text after its last join, and of a direct child's call; children per
    problem, and threads that failed."""
    from statistics import mean

    from apr_mini.trace_language import JOIN_CLOSE, count_tokens
    from apr_mini.trace_trees import iter_threads

    roots = [count_tokens(r["tree"]["main_calls"][-1]) for r in records]
    after_join = [count_tokens(text[text.rfind(JOIN_CLOSE) + len(JOIN_CLOSE):])
                  for text in (r["tree"]["main_calls"][-1] for r in records) if JOIN_CLOSE in text]
    children = [count_tokens(child["main_calls"][-1]) for r in records for spawn in r["tree"].get("sub_calls", [])
                for child in spawn if child.get("main_calls")]
    return {"root_last_call": round(mean(roots), 1), "root_after_join": round(mean(after_join), 1) if after_join else 0.0,
            "child": round(mean(children), 1) if children else 0.0,
            "children": round(len(children) / len(records), 2),
            "failed_threads": sum(1 for r in records for t in iter_threads(r["tree"]) if t.get("failure"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    from apr_mini import results
    from apr_mini.config import get_reproduce_config
    from apr_mini.inference import checkpoint_fingerprint
    from apr_mini.rl_effects import fixed_children_sentence, rl_fixed_children

    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_reproduce_config("cpu").at(ROOT)
    # the GRPO run started from the first budget model; the other seeds have no GRPO run to pair with
    config = dataclasses.replace(config, apr_budget=config.apr_budget[:1])
    models, missing = results.available_models(config)
    if not all(models[role] for role in ROLES):
        raise SystemExit(f"needs both budget models; missing: {', '.join(m for m in missing if 'budget' in m)}")
    models = {role: models[role] if role in ROLES else [] for role in models}
    fingerprints = {c: checkpoint_fingerprint(c) for role in ROLES for c in models[role]}
    runs = [r for r in results.plan(config, models) if r.role in ROLES]
    results.execute(config, models, runs, fingerprints, progress=False)
    loaded = {(r.role, r.seed, r.name): results.load_records(config, r) for r in runs}  # each file read once
    fixed = rl_fixed_children(config, lambda role, seed, name: loaded[(role, seed, name)], models, fingerprints)
    where = {f"{role} budget-{b}": thread_lengths(loaded[(role, 0, f"budget-{b}")])
             for role in ROLES for b in config.sub_call_budgets}
    free = json.loads((ROOT / "data" / "results" / "summary.json").read_text())["rl"].get("apr")

    def relative(path: str) -> str:
        return str(Path(path).relative_to(ROOT))

    OUT.write_text(json.dumps({"command": "python experiments/rl_fixed_children.py", "problems": relative(config.problems),
                               "n": config.n_problems, "models": {r: [relative(c) for c in models[r]] for r in ROLES},
                               "fixed_children": fixed, "where_the_tokens_go": where, "free_spawning": free},
                              indent=1) + "\n")
    print(fixed_children_sentence(fixed))
    for name, lengths in where.items():
        print(f"{name}: the root's last call {lengths['root_last_call']:.0f} tokens ({lengths['root_after_join']:.0f} after "
              f"its join), a child's {lengths['child']:.0f}, "
              f"{lengths['children']:.2f} children, {lengths['failed_threads']} threads that failed")
    if free:
        a = free["accuracy"]
        print(f"free spawning (data/results/summary.json): {100 * a['before']:.1f}% -> {100 * a['after']:.1f}% "
              f"({100 * a['difference']:+.1f}, 95% CI {100 * a['ci95'][0]:+.1f} to {100 * a['ci95'][1]:+.1f})")


if __name__ == "__main__":
    main()
