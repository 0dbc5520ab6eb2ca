"""Command line: ``python -m apr_mini {data,lengths,demo,sft,evaluate,infer,grpo,reproduce,assignments,colab,compare,notebooks,solve} --help`` (also installed as ``apr-mini``).

- ``data``: write a profile's problems, demonstrations and SFT rows (JSONL) with a manifest;
- ``lengths``: the share of SoS+ and APR training rows that overflow each context window;
- ``demo``: the main job of ``make demo``: APR and SoS+ on the shipped models, at two windows;
- ``sft``: train a SoS+ or APR model with TRL (checkpoints, resumes, logs a learning curve);
- ``evaluate``: verified success of a checkpoint on held-out problems, without the parallel engine;
- ``infer``: run held-out problems through the spawn/join engine (APR, SoS+, N samples), resumable;
- ``grpo``: reinforcement learning (GRPO over spawn trees) from an SFT checkpoint, resumable;
- ``reproduce``: the paper's three claims (context, compute, latency) with seeds and intervals, resumable;
- ``assignments``: the course's graded assignments (nbgrader): student versions and grading;
- ``colab``: the setup cell that opens every notebook on Colab, and the links to them;
- ``compare``: the paired accuracy difference of two runs' records on the same problems;
- ``notebooks``: run the lessons under ``cpu`` and store their outputs (figures as PNG), readable without running;
- ``solve``: solve one Countdown problem exactly, e.g. ``python -m apr_mini solve 24 32 84 26 59``.

The commands that run trained models (demo, infer, grpo, reproduce, compare) are :mod:`apr_mini.cli_run`'s;
the argument types they all share are :mod:`apr_mini.cli`'s.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import cli_run
from .cli import COUNT, NON_NEGATIVE, RATE, TEMPERATURE, WINDOW, invocation
from .config import PROFILES, UserFacingError, get_profile


def _profile_from(args):
    profile = get_profile(args.profile)
    data = profile.data
    changes = {k: v for k, v in {"n_train": args.n_train, "n_val": args.n_val, "seed": args.seed}.items()
               if v is not None}
    from dataclasses import replace
    if changes:
        profile = profile.replace(data=replace(data, **changes))
    if args.budget_prefixes:
        profile = profile.replace(demo=replace(profile.demo, condition="sub_calls", sosp_token_budget=True,
                                               token_budget_step=args.token_budget_step
                                               or profile.demo.token_budget_step))
    return profile


def _add_data_args(parser):
    parser.add_argument("--profile", choices=sorted(PROFILES), help="default: $APR_PROFILE or cpu")
    parser.add_argument("--n-train", type=COUNT, help="training problems (default: the profile's)")
    parser.add_argument("--n-val", type=COUNT, help="validation problems (default: the profile's)")
    parser.add_argument("--seed", type=int, help="data seed (default: the profile's)")
    parser.add_argument("--workers", type=COUNT, default=min(4, os.cpu_count() or 1), help="processes")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--budget-prefixes", action="store_true",
                        help="write the paper's budget prefixes: 'Sub Call Budget: N' on APR trees (children "
                             "spawned), 'Token Budget: N' on SoS+ traces (their tokens, rounded up)")
    parser.add_argument("--token-budget-step", type=COUNT, help="round token budgets up to a multiple of this "
                        "(default: the profile's)")


def cmd_data(args) -> dict:
    from .data import build_dataset, summary_table

    profile = _profile_from(args)
    out = Path(args.out or f"runs/{profile.name}/data")
    command = invocation()
    manifest = build_dataset(profile, out, workers=args.workers, progress=not args.no_progress, command=command)
    print(f"wrote {out}/ ({', '.join(f'{k}={v}' for k, v in manifest['counts'].items())}) "
          f"in {manifest['seconds']['total']:.1f}s")
    print(summary_table(manifest["summary_train"]))
    return manifest


def cmd_lengths(args) -> None:
    from .sft import overflow_report

    data = Path(args.data or f"runs/{get_profile(args.profile).name}/data")
    report = overflow_report(data, args.contexts)
    print(f"training rows of {data} longer than the context window (dropped by SFT)")
    print("| rows | count | longest | " + " | ".join(f"over {c:,}" for c in args.contexts) + " |")
    print("|---" * (3 + len(args.contexts)) + "|")
    for kind, name in (("sosp", "SoS+"), ("apr", "APR (every thread's call)")):
        r = report[kind]
        print(f"| {name} | {r['rows']:,} | {r['max_tokens']:,} | " +
              " | ".join(f"{r['over'][c]:.1%}" for c in args.contexts) + " |")


def cmd_sft(args) -> None:
    from .data import load_problems
    from .sft import SFTRun, train

    profile = get_profile(args.profile)
    data = Path(args.data or f"runs/{profile.name}/data")
    run = SFTRun(kind=args.kind, model=args.model or profile.name, max_tokens=args.max_tokens, lr=args.lr,
                 seed=args.seed, eval_every=args.eval_every, eval_problems=args.eval_problems, threads=args.threads,
                 keep=args.keep, init=args.init, overflow=args.overflow)
    out = Path(args.out or f"runs/{profile.name}/sft-{args.kind}")
    out.mkdir(parents=True, exist_ok=True)  # an unwritable place fails here, before any work
    val = load_problems(data / "problems_val.jsonl")
    command = invocation()
    metrics = train(run, data, out, val_problems=val, command=command)
    if int(os.environ.get("RANK", "0")):  # under accelerate launch (DDP) the main process reports and ships
        return
    print(f"trained {metrics['tokens_seen']:,} tokens, final loss {metrics['final_loss']}: {out}/final")
    if args.ship:
        from .sft import ship

        shipped = ship(out, data, args.ship, kind=args.kind, n_val=args.ship_val, command=command)
        print(f"shipped to {args.ship}: validation {shipped['validation']}")


def cmd_evaluate(args) -> None:
    import json

    from .data import load_problems
    from .inference import evaluate_checkpoint

    problems = load_problems(args.problems, args.n)
    scores = evaluate_checkpoint(args.checkpoint, problems, kind=args.kind, temperature=args.temperature)
    print(json.dumps({"checkpoint": args.checkpoint, "problems": args.problems, **scores}, indent=2))


def cmd_assignments(args) -> None:
    from . import assignments

    if args.action == "generate":
        for path in assignments.generate():
            print(f"wrote {path}")
        return
    if args.action == "freeze":
        for path in assignments.freeze(seed=args.seed):
            print(f"wrote {path} (keep it private: its seed draws the graded cases)")
        return
    if args.action == "export":
        if not args.submissions:
            raise UserFacingError("export needs a destination folder: python -m apr_mini assignments export DEST")
        for path in assignments.export(args.submissions, course_url=args.course_url):
            print(f"wrote {path}")
        return
    if not args.submissions:
        raise UserFacingError("grade needs the submissions folder: <folder>/<student>/<assignment id>.ipynb")
    rows = assignments.grade(args.submissions, out=args.out)
    print(assignments.score_table(rows))
    print(f"scores: {args.out or Path(args.submissions) / 'scores.csv'}")


def cmd_colab(args) -> None:
    from . import colab

    for path in colab.sync_setup_cells():
        print(f"wrote the setup cell of {path} (run `make assignments` for the student versions)")
    for path in colab.lessons():
        print(f"[{path.stem}]({colab.colab_link(path)})")
    for path in colab.student_notebooks():
        print(f"[{path.stem}]({colab.course_link(path)})")


def cmd_notebooks(args) -> None:
    from . import notebook_outputs

    paths = [p for p in notebook_outputs.lessons() if not args.only or p.name[:2] in args.only]
    for path in paths:
        size = notebook_outputs.render(path, profile=args.profile)
        print(f"wrote {path.relative_to(notebook_outputs.REPO)} with its {args.profile} outputs ({size / 1e6:.2f} MB)",
              flush=True)


def cmd_solve(args) -> None:
    from .countdown import all_solutions

    solutions = all_solutions(args.numbers, args.target)
    if not solutions:
        print(f"{args.numbers} cannot make {args.target}")
        return
    print(f"{len(solutions)} solution path{'s' if len(solutions) != 1 else ''}; the first few:")
    for path in solutions[: args.show]:
        print("  " + ", ".join(map(str, path)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="apr-mini", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="write problems, demonstrations and SFT rows")
    _add_data_args(data)
    data.add_argument("--out", help="output folder (default: runs/<profile>/data)")
    data.set_defaults(fn=cmd_data)
    lengths = sub.add_parser("lengths", help="share of SoS+ and APR training rows over each context window")
    lengths.add_argument("--profile", choices=sorted(PROFILES), help="default: $APR_PROFILE or cpu")
    lengths.add_argument("--data", help="data folder (default: runs/<profile>/data)")
    lengths.add_argument("--contexts", type=WINDOW, nargs="+", default=[512, 640, 768, 1024])
    lengths.set_defaults(fn=cmd_lengths)
    sft = sub.add_parser("sft", help="train a SoS+ or APR model on a data folder (resumes from checkpoints)")
    sft.add_argument("--profile", choices=sorted(PROFILES), help="default: $APR_PROFILE or cpu")
    sft.add_argument("--kind", choices=["sosp", "apr"], required=True)
    sft.add_argument("--data", help="data folder (default: runs/<profile>/data)")
    sft.add_argument("--out", help="run folder (default: runs/<profile>/sft-<kind>)")
    sft.add_argument("--model", help="model preset (default: the profile's name)")
    sft.add_argument("--max-tokens", type=COUNT, default=20_000_000, help="training budget in tokens")
    sft.add_argument("--lr", type=RATE, default=3e-3)
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--init", help="continue from this checkpoint's weights (e.g. data/cpu-apr) instead of a "
                     "fresh model, for example on data written with --budget-prefixes")
    sft.add_argument("--keep", choices=["all", "solved"], default="all", help="which demonstrations to train on")
    sft.add_argument("--overflow", choices=["drop", "truncate"], default="drop",
                     help="rows longer than the window: drop them, or cut them there as the reference does")
    sft.add_argument("--eval-every", type=NON_NEGATIVE, default=2000, help="steps between learning-curve points")
    sft.add_argument("--eval-problems", type=NON_NEGATIVE, default=100)
    sft.add_argument("--threads", type=NON_NEGATIVE, default=0, help="torch threads (0: torch's default)")
    sft.add_argument("--ship", help="after training, copy the model to this folder (e.g. data/cpu-sosp) with "
                                    "its validation problems, and evaluate it there")
    sft.add_argument("--ship-val", type=COUNT, default=200, help="validation problems to evaluate when shipping")
    sft.set_defaults(fn=cmd_sft)
    evaluate = sub.add_parser("evaluate", help="verified success of a checkpoint on held-out problems (no engine)")
    evaluate.add_argument("--checkpoint", required=True, help="a folder with model and tokenizer")
    evaluate.add_argument("--kind", choices=["sosp", "apr"], required=True)
    evaluate.add_argument("--problems", required=True, help="a problems JSONL file (e.g. problems_val.jsonl)")
    evaluate.add_argument("--n", type=COUNT, default=200, help="how many problems (from the top)")
    evaluate.add_argument("--temperature", type=TEMPERATURE, default=0.0)
    evaluate.set_defaults(fn=cmd_evaluate)
    cli_run.register(sub)
    course = sub.add_parser("assignments", help="course assignments (nbgrader): write the student versions, freeze "
                                                 "the answers, export the student-facing course, grade submissions")
    course.add_argument("action", choices=["generate", "freeze", "export", "grade"])
    course.add_argument("submissions", nargs="?", help="grade: a folder of <student>/<assignment id>.ipynb; "
                                                       "export: the destination folder")
    course.add_argument("--seed", type=int, help="freeze: the seed of the graded cases (default: a new secret one)")
    course.add_argument("--course-url", help="export: the student-facing repository (default: apr_mini.colab.COURSE_URL)")
    course.add_argument("--out", help="grade: the score table's CSV (default: <submissions>/scores.csv)")
    course.set_defaults(fn=cmd_assignments)
    colab = sub.add_parser("colab", help="write the Colab setup cell into every notebook (from apr_mini.colab.REPO_URL) "
                                         "and print each notebook's Open-in-Colab link")
    colab.set_defaults(fn=cmd_colab)
    books = sub.add_parser("notebooks", help="run every lesson under the cpu profile and store its outputs "
                                             "(figures as PNG), so that it reads without running")
    books.add_argument("only", nargs="*", help="number prefixes, e.g. 01 06 (default: all)")
    books.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="whose data (default: cpu)")
    books.set_defaults(fn=cmd_notebooks)
    solve = sub.add_parser("solve", help="solve one problem exactly")
    solve.add_argument("target", type=COUNT)
    solve.add_argument("numbers", type=NON_NEGATIVE, nargs="+")
    solve.add_argument("--show", type=NON_NEGATIVE, default=5, help="how many solutions to print")
    solve.set_defaults(fn=cmd_solve)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except UserFacingError as err:
        parser.exit(2, f"apr-mini {args.command}: error: {err}\n")
    except OSError as err:  # a path that cannot be read or written (permissions, a file in the way, a full disk)
        parser.exit(2, f"apr-mini {args.command}: error: {err}\n")


if __name__ == "__main__":
    main()
