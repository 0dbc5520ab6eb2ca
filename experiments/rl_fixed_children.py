"""What RL buys at a fixed number of children: accuracy before and after GRPO with the number of
children fixed, beside the same before/after with free spawning.

The paper's appendix finds APR's RL gain near zero when 10 children are enforced (83.2% before, 83.3%
after), so its gain comes mostly from a wider search, not from better choices at one width.

- ``--profile cpu`` (the 3-number task): the width is fixed by the prompt. The sub-call budget model
  (``data/cpu-apr-budget``, which obeys ``Sub Call Budget: N``) and its GRPO run on its own drawn
  budgets (``data/cpu-apr-budget-grpo``, made by ``grpo --sub-call-budgets 3,4,5,6``) run at every
  budget of the cpu reproduction on its 200 validation problems; neither model's settings were chosen
  on them beyond what the shipped APR GRPO recipe was (its beta was picked on them).
  Writes ``data/grpo/fixed_children.json``.
- ``--profile cpu4`` (the deep task, which has no budget model): the width is fixed by the engine.
  Every deep APR SFT model and its GRPO run run with ``Limits.spawn_width`` N (the first N children
  each spawn names run and are joined; the models spawn 5 or 6), on the deep reproduction's test
  problems, which no choice has seen. Writes ``data/grpo/cpu4-fixed-children.json``.

Each run is greedy through the engine, with resumable records in the reproduction's records folder
(the files ``reproduce`` reads), paired per training seed by :func:`apr_mini.rl_effects.rl_fixed_children`.
The free-spawning row is the reproduction's own (``summary.json``, key ``rl``); where each run's tokens
go (the root's text after its join against a child's) says what RL changed at a fixed width.

Run:  python experiments/rl_fixed_children.py [--profile cpu|cpu4] [--widths 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def width_runs(config, models: dict[str, list[str]], fingerprints: dict[str, str], widths: list[int]) -> list:
    """The engine-width runs of every APR SFT model that has a GRPO run, and of that run."""
    from apr_mini.engine import Limits
    from apr_mini.inference import EvalSettings
    from apr_mini.results import Run
    from apr_mini.rl_effects import FIXED_BY_ENGINE, grpo_pairs

    *roles, run_name = FIXED_BY_ENGINE
    runs = []
    for sft_seed, grpo_seed in grpo_pairs(models, fingerprints, *roles):
        for role, seed in zip(roles, (sft_seed, grpo_seed)):
            runs += [Run(role, seed, run_name.format(w), EvalSettings(method="apr", limits=Limits(context=config.windows[-1],
                                                                                              spawn_width=w)),
                         config.n_problems) for w in widths]
    return runs


def width_held(config, loaded: dict, models: dict[str, list[str]], fingerprints: dict[str, str], widths: list[int]) -> dict:
    """The engine caps each spawn, not the problem: a parent that gets fewer results than it asked for may
    spawn again. For each width: every seed's spawns per problem before and after RL, and RL's before/after
    pooled over the seeds where every problem spawned once on both sides (its width held)."""
    from apr_mini.rl_effects import FIXED_BY_ENGINE, grpo_pairs, rl_fixed_children

    *roles, run_name = FIXED_BY_ENGINE
    pairs = grpo_pairs(models, fingerprints, *roles)
    index = {(role, c): seed for role in roles for seed, c in enumerate(models[role])}
    out = {}
    for w in widths:
        spawns = [[max(len(r["tree"].get("sub_calls", [])) for r in loaded[(role, seed, run_name.format(w))])
                   for role, seed in zip(roles, pair)] for pair in pairs]
        kept = [pair for pair, most in zip(pairs, spawns) if max(most) <= 1]
        subset = {role: [models[role][pair[k]] for pair in kept] for k, role in enumerate(roles)}

        def records(role: str, seed: int, name: str, subset=subset) -> list[dict]:  # seed: an index into subset
            return loaded[(role, index[(role, subset[role][seed])], name)]

        out[str(w)] = {"spawns_per_problem": {models[roles[0]][s].split("/")[-1]: [
                           mean_spawns(loaded[(role, seed, run_name.format(w))]) for role, seed in zip(roles, (s, g))]
                           for s, g in pairs},
                       "seeds": [models[roles[0]][s].split("/")[-1] for s, _ in kept],
                       "fixed_children": rl_fixed_children(config, records, subset, fingerprints, (w,))}
    return out


def mean_spawns(records: list[dict]) -> float:
    return round(sum(len(r["tree"].get("sub_calls", [])) for r in records) / len(records), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["cpu", "cpu4"], default="cpu")
    parser.add_argument("--widths", default="3", help="cpu4: comma-separated numbers of children to run (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        parser.error(f"--widths takes numbers separated by commas, e.g. 3,4; got {args.widths!r}")
    if min(widths) < 1:
        parser.error("every width must be at least 1")
    import torch

    from apr_mini import results
    from apr_mini.config import get_reproduce_config
    from apr_mini.inference import checkpoint_fingerprint
    from apr_mini.rl_effects import FIXED_BY_ENGINE, FIXED_BY_PROMPT, fixed_children_sentence, rl_fixed_children

    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_reproduce_config(args.profile).at(ROOT)
    deep = args.profile == "cpu4"
    *roles, run_name = FIXED_BY_ENGINE if deep else FIXED_BY_PROMPT
    if not deep:  # the GRPO run started from the first budget model; the other seeds have no GRPO run to pair with
        config = dataclasses.replace(config, apr_budget=config.apr_budget[:1])
    models, missing = results.available_models(config)
    if not all(models[role] for role in roles):
        raise SystemExit(f"needs the models of {' and '.join(roles)}; missing: {', '.join(missing) or 'none listed'}")
    models = {role: models[role] if role in roles else [] for role in models}
    fingerprints = {c: checkpoint_fingerprint(c) for role in roles for c in models[role]}
    runs = width_runs(config, models, fingerprints, widths) if deep else \
        [r for r in results.plan(config, models) if r.role in roles]
    results.execute(config, models, runs, fingerprints, progress=False)
    loaded = {(r.role, r.seed, r.name): results.load_records(config, r) for r in runs}  # each file read once
    fixed = rl_fixed_children(config, lambda role, seed, name: loaded[(role, seed, name)], models, fingerprints,
                              tuple(widths) if deep else ())
    held = width_held(config, loaded, models, fingerprints, widths) if deep else {}
    where = {value: {when: thread_lengths([r for (rl, _, name), records in loaded.items()
                                           if (rl, name) == (role, run_name.format(value)) for r in records])
                     for when, role in zip(("before", "after"), roles)} for value in fixed}
    summary = Path(config.out) / "summary.json"
    free = json.loads(summary.read_text())["rl"].get("apr") if summary.exists() else None
    how = "the APR models before and after GRPO, the engine running the first N children of each spawn" if deep \
        else "the sub-call budget model before and after GRPO"

    def relative(path) -> str:
        return str(Path(path).relative_to(ROOT))

    out = ROOT / "data" / "grpo" / ("cpu4-fixed-children.json" if deep else "fixed_children.json")
    command = "python experiments/rl_fixed_children.py" + (f" --profile cpu4 --widths {args.widths}" if deep else "")
    out.write_text(json.dumps({"command": command, "problems": relative(config.problems), "n": config.n_problems,
                               "models": {r: [relative(c) for c in models[r]] for r in roles}, "fixed_by": how,
                               "fixed_children": fixed, "where_the_tokens_go": where, "free_spawning": free,
                               **({"where_the_width_held": held} if deep else {})},
                              indent=1) + "\n")
    print(fixed_children_sentence(fixed, how))
    for value, study in held.items():
        print(f"{value} children: spawns per problem, (before, after) RL, by seed: {study['spawns_per_problem']}; "
              f"pooled over the {len(study['seeds'])} seed(s) whose every problem spawned once: "
              + (fixed_children_sentence(study["fixed_children"], how) if study["fixed_children"] else "none"))
    for value, both in where.items():
        for when, lengths in both.items():
            print(f"{value} children, {when} RL: the root's last call {lengths['root_last_call']:.0f} tokens "
                  f"({lengths['root_after_join']:.0f} after its join), a child's {lengths['child']:.0f}, "
                  f"{lengths['children']:.2f} children, {lengths['failed_threads']} threads that failed")
    if free:
        a = free["accuracy"]
        print(f"free spawning ({relative(summary)}): {100 * a['before']:.1f}% -> {100 * a['after']:.1f}% "
              f"({100 * a['difference']:+.1f}, 95% CI {100 * a['ci95'][0]:+.1f} to {100 * a['ci95'][1]:+.1f})")


if __name__ == "__main__":
    main()
