"""The deep task's (cpu4) learning-curve probes: what each SFT recipe has learned after how many tokens.

Each probe is an ``sft`` run on ``runs/cpu4/data`` (``python -m apr_mini data --profile cpu4``) with
the ``cpu4`` model, shipped to ``data/cpu4-probes/<name>/`` with its ``curve.jsonl`` (greedy, on the
first validation problems) and ``metrics.json`` (the exact command). This prints one table row per
curve point: verified (SoS+ alone; APR through the engine), the share of traces that ended inside the
window, and for APR the spawn rate and how many of the children's solvable sub-problems they solve.

Run:  python experiments/deep_probes.py [--probes data/cpu4-probes]
      python experiments/deep_probes.py --ceilings runs/cpu4/data   (what the solver reaches per window)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(folder: Path) -> list[dict]:
    """Every curve point of every probe under ``folder``, with the probe's name, method and start."""
    table = []
    for probe in sorted(p for p in folder.iterdir() if (p / "curve.jsonl").exists()):
        run = json.loads((probe / "metrics.json").read_text())["run"]
        for line in (probe / "curve.jsonl").read_text().splitlines():
            point = json.loads(line)
            table.append({"probe": probe.name, "kind": run["kind"], "start": run["init"] or "scratch", **point})
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| probe | start | tokens | n | verified | ended in window | spawns | children solve (of solvable) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        verified = r.get("engine_verified", r["verified"])
        apr = r["kind"] == "apr"
        spawns = f"{r['spawn_rate']:.0%}" if apr else "-"
        children = f"{r['children_solved_of_solvable']:.0%} (of {r['children_solvable']})" if apr else "-"
        lines.append(f"| {r['probe']} | {r['start']} | {r['tokens'] / 1e6:.1f}M | {r['n']} | "
                     f"{round(verified * r['n'])}/{r['n']} | {r['finished']:.0%} | {spawns} | {children} |")
    return "\n".join(lines)


def ceilings(demos: list[dict], windows=(1536, 2048, 3072, 4096)) -> str:
    """What the solver's own demonstrations reach at each window: the share of problems whose SoS+
    trace solves them within the window, and whose APR tree does with every sequence inside it (the
    most a model that imitates them could score there)."""
    n = len(demos)
    lines = ["| window | SoS+ trace fits | SoS+ solves within it | APR tree solves, every sequence within it |",
             "|---|---|---|---|"]
    for w in windows:
        fits = sum(d["sosp"]["tokens"] <= w for d in demos) / n
        sosp = sum(d["sosp"]["solved"] and d["sosp"]["tokens"] <= w for d in demos) / n
        apr = sum(d["apr"]["solved"] and d["apr"]["stats"]["longest_sequence"] <= w for d in demos) / n
        lines.append(f"| {w:,} | {fits:.1%} | {sosp:.1%} | {apr:.1%} |")
    return f"{n} problems\n" + "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", default="data/cpu4-probes")
    parser.add_argument("--ceilings", metavar="DATA", help="instead: the solver's ceilings at each window, from "
                        "DATA/demos_val.jsonl (e.g. runs/cpu4/data)")
    args = parser.parse_args()
    if args.ceilings:
        from apr_mini.data import load_demos

        print(ceilings(load_demos(args.ceilings, "val")))
    else:
        print(markdown(rows(Path(args.probes))))
