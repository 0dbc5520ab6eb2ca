"""``make demo``: APR and SoS+ at work, on the shipped models, in about two minutes on 2 cores.

Run with ``python -m apr_mini demo`` (``--n``, ``--tight``, ``--out``). Both shipped ``cpu`` models
(``data/cpu-sosp``, ``data/cpu-apr``: same size, data and budget) solve the first ``n`` validation
problems through the spawn/join engine, greedy, at the models' own window and at a tight one. It
prints each method's accuracy with its n and 95% interval, the paired difference, the children, the
critical path (latency in tokens), the total tokens and the time per problem; it draws one APR
spawn tree to an HTML file a browser opens, and names the notebooks that go deeper. Records are
resumable JSONL (:func:`apr_mini.inference.run_eval`): a second run reprints at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import trace_trees as tt
from .config import UserFacingError
from .data import load_problems
from .engine import Limits
from .inference import (EvalSettings, checkpoint_fingerprint, open_backend, problem_rows, run_eval,
                        run_is_complete, summarize)
from .stats import bootstrap_mean, paired_difference

# the models each profile's demo runs: (method, name, checkpoint); tiny has only the test models
DEMO_MODELS = {
    "tiny": (("sosp", "SoS+", "data/tiny-sosp"), ("apr", "APR", "data/tiny-apr")),
    "cpu": (("sosp", "SoS+", "data/cpu-sosp"), ("apr", "APR", "data/cpu-apr")),
}
PROBLEMS = "data/countdown-cpu/problems_val.jsonl"


def _row(name: str, window: int, records: list[dict], seconds: float) -> dict:
    solved = [float(r["accuracy"]) for r in problem_rows(records)]
    means = summarize(records)
    return {"method": name, "window": window, "n": means["problems"], "solved": int(sum(solved)),
            "accuracy": means["accuracy"], "ci95": bootstrap_mean([solved])["ci95"], "children": means["children"],
            "critical_path": means["critical_path"], "total_tokens": means["total_tokens"],
            "seconds_per_problem": seconds / means["problems"]}


def demo_table(rows: list[dict]) -> str:
    """The demo's results as a Markdown table, one line per method and window."""
    lines = ["| method | window | solved (n) | accuracy (95% CI) | children | critical path | total tokens | wall s per problem (batched) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['window']:,} | {r['solved']} ({r['n']}) | {r['accuracy']:.0%} "
                     f"({r['ci95'][0]:.0%} to {r['ci95'][1]:.0%}) | {r['children']:.1f} | {r['critical_path']:,.0f} | "
                     f"{r['total_tokens']:,.0f} | {r['seconds_per_problem']:.2f} |")
    return "\n".join(lines)


def run_demo(profile: str = "cpu", *, n: int = 40, tight: int = 512, out: str | Path = "runs/demo",
             root: str | Path = Path(__file__).resolve().parents[1], progress: bool = True) -> dict:
    """Run the demo (resumable) and return ``{"rows", "differences", "tree_html"}``; prints as it goes."""
    from .plots import timeline_figure

    if profile not in DEMO_MODELS:
        raise UserFacingError(f"the demo runs the shipped models of profile {' or '.join(DEMO_MODELS)}, not {profile!r}")
    root, out = Path(root), Path(out)
    problems = load_problems(root / PROBLEMS, n)
    rows, by_run = [], {}
    for method, name, checkpoint in DEMO_MODELS[profile]:
        folder = root / checkpoint
        backend = open_backend(folder)
        own = backend.context_window
        windows = sorted({own, min(tight, own)}, reverse=True)
        for window in windows:
            settings = EvalSettings(method=method, limits=Limits(context=window))
            path = out / profile / f"{method}-window-{window}-n{n}.jsonl"
            fingerprint, wall = checkpoint_fingerprint(folder), path.with_suffix(".seconds.json")
            finished = run_is_complete(path, problems, settings, fingerprint) and wall.exists()
            start = time.perf_counter()
            records = run_eval(backend, problems, path, settings, progress=progress, model=fingerprint)
            if not finished:  # the wall time of a whole run, every problem in flight together
                wall.write_text(json.dumps({"seconds": round(time.perf_counter() - start, 2)}))
            seconds = json.loads(wall.read_text())["seconds"]
            by_run[(name, window)] = records
            rows.append(_row(name, window, records, seconds))
    print(demo_table(rows))
    differences = {}
    for window in sorted({w for _, w in by_run}, reverse=True):
        if ("APR", window) in by_run and ("SoS+", window) in by_run:
            d = differences[window] = paired_difference(by_run[("SoS+", window)], by_run[("APR", window)])
            print(f"window {window:,}: APR minus SoS+ {100 * d['difference']:+.1f} points "
                  f"(95% CI {100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f}, n={len(problems)}): "
                  + ("within noise" if d["ci95"][0] <= 0 <= d["ci95"][1] else "outside noise"))
    apr_records = by_run[("APR", max(w for m, w in by_run if m == "APR"))]
    shown = next((r for r in apr_records if r["verified"]), apr_records[0])
    figure = timeline_figure(tt.timeline(shown["tree"]), title=f"APR on problem #{shown['id']}: "
                             f"{shown['target']} from {shown['nums']} (verified: {shown['verified']})")
    tree_html = out / profile / "apr_tree.html"
    figure.write_html(tree_html, include_plotlyjs=True)
    print(f"one APR spawn tree, threads side by side in token time: {tree_html} (open it in a browser)")
    print("deeper: notebook 04 runs the engine step by step; notebook 06 measures the paper's three claims")
    return {"rows": rows, "differences": differences, "tree_html": str(tree_html)}
