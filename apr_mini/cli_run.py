"""The commands that run trained models: ``demo``, ``infer``, ``grpo``, ``reproduce`` and ``compare``.

``python -m apr_mini <command> --help`` for each; :mod:`apr_mini.__main__` holds the data and training
commands and puts both sets on one command line.
"""

from __future__ import annotations

from pathlib import Path

from .cli import COUNT, NON_NEGATIVE, TEMPERATURE, WINDOW, invocation
from .config import PROFILES, UserFacingError, get_profile


def cmd_demo(args) -> None:
    import torch

    from .demo import run_demo

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"apr-mini demo: the shipped {args.profile} SoS+ and APR models on {args.n} validation problems, "
          "through the spawn/join engine")
    run_demo(args.profile, n=args.n, tight=args.tight, out=args.out, progress=not args.no_progress)


def _outside_task(problems, checkpoint: Path) -> str | None:
    """What is wrong when problems are not the task the checkpoint was trained on (its metrics.json), or None."""
    import json

    from .config import TaskConfig
    from .data import outside_task

    metrics = checkpoint / "metrics.json"
    if not metrics.is_file():
        return None
    task = json.loads(metrics.read_text()).get("task")
    if not task:
        return None
    trained = TaskConfig(task["n_numbers"], *task["numbers"], *task["targets"])
    strange = outside_task(problems, trained)
    if not strange:
        return None
    return (f"{len(strange)} of {len(problems)} problems are outside the task {checkpoint.name} was trained on "
            f"({trained.n_numbers} numbers in {trained.min_number}..{trained.max_number}, targets "
            f"{trained.min_target}..{trained.max_target}), e.g. {strange[0].to_dict()}")


def _committed_train_split(profile) -> str:
    """The committed training problems of the profile's task (``tiny`` shares the cpu task's): a cpu4 run
    once trained on the 3-number problems by default and learned nothing."""
    for name in (profile.name, "cpu"):
        if PROFILES[name].task == profile.task and Path(f"data/countdown-{name}/problems_train.jsonl").exists():
            return f"data/countdown-{name}/problems_train.jsonl"
    return f"data/countdown-{profile.name}/problems_train.jsonl"  # not committed: the error below names it


def cmd_infer(args) -> None:
    import json
    import warnings

    import torch

    from .engine import BackendUnavailable, Limits
    from .data import load_problems, read_jsonl
    from .inference import (EvalSettings, check_resume, checkpoint_fingerprint, open_backend, run_eval,
                            smaller_contexts, summarize, summary_table)

    profile = get_profile(args.profile)
    checkpoint = Path(args.checkpoint or f"data/{profile.name}-{args.method}")
    if args.backend == "openai" and not args.url:
        raise UserFacingError("--backend openai needs --url, the server's address (e.g. http://127.0.0.1:8000)")
    if args.backend == "transformers" and not (checkpoint / "config.json").is_file():
        raise UserFacingError(f"{checkpoint} is not a model folder (no config.json): pass --checkpoint, e.g. data/cpu-apr")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        limits = Limits(max_depth=args.max_depth, max_children=args.max_children, spawn_width=args.spawn_width,
                        max_thread_tokens=args.max_thread_tokens, context=args.context)
        settings = EvalSettings(method=args.method, samples=args.samples, temperature=args.temperature,
                                seed=args.seed, prefix=args.prefix, limits=limits)
    except ValueError as err:
        raise UserFacingError(str(err)) from None
    problems = load_problems(args.problems or checkpoint / "problems_val.jsonl", args.n)
    strange = _outside_task(problems, checkpoint)
    if strange:
        warnings.warn(f"{strange}: expect it to fail them", stacklevel=2)
    samples = f"-s{args.samples}" if args.samples > 1 else ""  # a greedy run and an N-sample run don't share a file
    out = Path(args.out or f"runs/infer/{checkpoint.name}-{args.method}{samples}.jsonl")
    model = checkpoint_fingerprint(checkpoint)
    check_resume(out, problems, settings, model)  # before spending seconds on loading the model
    backend = open_backend(checkpoint, kind=args.backend, join=args.join, url=args.url, max_batch=args.max_batch,
                           context_window=args.context)
    try:
        records = run_eval(backend, problems, out, settings, max_live=args.max_live, progress=not args.no_progress,
                           model=model)
    except BackendUnavailable as err:
        finished = len(read_jsonl(out)) if out.exists() else 0
        raise UserFacingError(f"{err}. The {finished} finished problems are kept in {out}; run the same command "
                              "again when the server is back to do the rest") from None
    summary = summarize(records)
    print(summary_table({f"{checkpoint.name} {args.method}": summary}))
    if summary.get("failed_threads"):
        print(f"{summary['failed_threads']:.2f} failed threads per problem (limits, malformed output, backend errors): "
              f"see each record's metrics.failures")
    if args.within:
        summary["smaller_contexts"] = smaller_contexts(records, args.within)
        print("| context | verified within it | doesn't fit |\n|---|---|---|")
        for window, share in summary["smaller_contexts"].items():
            print(f"| {window:,} | {share['verified']:.1%} | {share['longer']:.1%} |")
    print(f"records: {out}")
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=1))


def cmd_grpo(args) -> None:
    import torch

    from . import grpo_train, rollouts
    from .config import get_grpo_config
    from .data import load_problems

    profile = get_profile(args.profile)
    changes = {name: getattr(args, name) for name in
               ("learning_rate", "max_steps", "problems_per_step", "num_generations", "beta", "epsilon",
                "epsilon_high", "loss_type", "scale_rewards", "sequence_weighting", "num_iterations", "reward",
                "eval_steps", "eval_problems", "seed", "temperature", "min_well_formed", "efficiency_cap",
                "trained_threads", "mask_truncated_completions", "shuffle_rewards")}
    if args.sub_call_budgets:
        try:
            changes["sub_call_budgets"] = tuple(int(b) for b in args.sub_call_budgets.split(","))
        except ValueError:
            raise UserFacingError(f"--sub-call-budgets takes comma-separated child counts such as 3,4,5,6, "
                                  f"not {args.sub_call_budgets!r}") from None
    try:
        config = get_grpo_config(profile.name, kind=args.kind, **changes)
    except ValueError as err:
        raise UserFacingError(str(err)) from None
    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.json").exists():
        raise UserFacingError(f"{checkpoint} is not a model folder (no config.json): pass an SFT checkpoint "
                              "such as data/cpu-apr")
    problems = Path(args.problems or _committed_train_split(profile))
    for path in (problems, checkpoint / "problems_val.jsonl"):
        if not Path(path).exists():
            default = path == problems and not args.problems  # the hint is for the training split, not the checkpoint's
            raise UserFacingError(f"{path} not found" + (": pass --problems, the training problems of the "
                                                         "checkpoint's task" if default else ""))
    train_problems = load_problems(problems, args.n_train)
    strange = _outside_task(train_problems, checkpoint)
    if strange:
        raise UserFacingError(f"{strange}: GRPO would learn nothing from them; pass --problems of its task")
    if args.threads:
        torch.set_num_threads(args.threads)
    val = load_problems(checkpoint / "problems_val.jsonl")
    out = args.out or f"runs/{profile.name}/grpo-{args.kind}"
    command = invocation()
    if args.rollout_server:
        from .serving import launch_server

        # the paper's setup: this process trains, SGLang serves the rollouts and reloads the weights each step
        with launch_server(checkpoint.resolve(), kind="sglang", timeout=600,
                           extra_args=["--attention-backend", "triton"]) as server:
            metrics = grpo_train.train(checkpoint, args.kind, train_problems, out, config, eval_problems=val, command=command,
                                 progress=not args.no_progress,
                                 rollouts=rollouts.ServerRollouts(server, Path(out).resolve() / "sync"))
    else:
        metrics = grpo_train.train(checkpoint, args.kind, train_problems, out, config, eval_problems=val, command=command,
                             progress=not args.no_progress)
    print(f"trained {metrics['steps']} steps ({metrics['trees']:,} trees) in {metrics['wall_seconds']:.0f} s: {out}/final")
    if args.ship:
        shipped = grpo_train.ship(out, args.ship, val[:args.ship_val], command=command, progress=not args.no_progress)
        v = shipped["validation"]
        d = v["accuracy_difference"]
        print(f"shipped to {args.ship}: accuracy {d['before']:.1%} -> {d['after']:.1%} on {d['n']} problems, "
              f"paired difference {d['difference']:+.1%} (SE {d['se']:.1%}); children "
              f"{v['before']['children']} -> {v['after']['children']}")


def cmd_reproduce(args) -> None:
    from .config import get_reproduce_config
    from .claims import claims_markdown
    from .results import attach_depth, reproduce

    if args.redraw:
        import json

        from .plots import write_claim_figures

        config = get_reproduce_config(args.profile, out=args.out)
        out = Path(config.out)
        if not (out / "summary.json").is_file():
            raise UserFacingError(f"no {out}/summary.json to redraw: run reproduce without --redraw first")
        summary = json.loads((out / "summary.json").read_text())
        if attach_depth(config, summary):  # the contrast task's summary may be newer than this one
            (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "claims.md").write_text(claims_markdown(summary) + "\n")
        write_claim_figures(summary, out)
        print(f"redrew {out}/claims.md and the figures from {out}/summary.json")
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = get_reproduce_config(args.profile, out=args.out, records=args.records, n_problems=args.n)
    command = invocation()
    only = tuple(role for role in (args.only or "").split(",") if role)
    summary = reproduce(config, progress=not args.no_progress, command=command, latency=not args.no_latency, only=only)
    if summary is None:
        print(f"records of {', '.join(only)} in {config.records}/; reproduce without --only writes the summary")
        return
    print(claims_markdown(summary))
    print(f"wrote {config.out}/summary.json and figures; records in {config.records}/")


def cmd_compare(args) -> None:
    from .data import read_jsonl
    from .stats import paired_difference

    for path in (args.first, args.second):
        if not Path(path).exists():
            raise UserFacingError(f"{path} not found")
    first, second = read_jsonl(args.first), read_jsonl(args.second)
    try:
        d = paired_difference(first, second)
    except ValueError as err:
        raise UserFacingError(str(err)) from None
    print(f"{args.second} minus {args.first} on {d['n']} shared problems: {d['after']:.1%} - {d['before']:.1%} = "
          f"{d['difference']:+.1%} (SE {d['se']:.1%}, 95% CI {d['ci95'][0]:+.1%} to {d['ci95'][1]:+.1%}; "
          f"{d['gained']} problems only the second solves, {d['lost']} only the first)")
    if all("tree" in r for r in first + second):  # engine records: say where each one loses
        from .attribution import CAUSES, loss_attribution

        causes = [loss_attribution(records) for records in (first, second)]
        print("where each loses (first -> second): " + ", ".join(
            f"{cause} {causes[0][cause]} -> {causes[1][cause]}" for cause in CAUSES))


def register(sub) -> None:
    """Add these commands to the command line's subparsers."""
    demo = sub.add_parser("demo", help="the main job of `make demo`: APR and SoS+ at work on the shipped models")
    demo.add_argument("--profile", choices=["cpu", "tiny"], default="cpu", help="whose shipped models (default: cpu)")
    demo.add_argument("--n", type=COUNT, default=40, help="validation problems (default: 40)")
    demo.add_argument("--tight", type=WINDOW, default=512, help="the tight context window (default: 512)")
    demo.add_argument("--out", default="runs/demo", help="records and the tree's HTML (default: runs/demo)")
    demo.add_argument("--threads", type=NON_NEGATIVE, default=0, help="torch threads (0: torch's default)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(fn=cmd_demo)
    infer = sub.add_parser("infer", help="run problems through the spawn/join engine (resumes a killed run)")
    infer.add_argument("--profile", choices=sorted(PROFILES),
                       help="picks the default checkpoint, data/<profile>-<method> (default: $APR_PROFILE or cpu)")
    infer.add_argument("--checkpoint", help="a folder with model and tokenizer (default: data/<profile>-<method>)")
    infer.add_argument("--method", choices=["apr", "sosp"], required=True, help="sosp forbids spawning")
    infer.add_argument("--problems", help="a problems JSONL file (default: the checkpoint's problems_val.jsonl)")
    infer.add_argument("--n", type=COUNT, default=200, help="how many problems (from the top)")
    infer.add_argument("--out", help="records JSONL (default: runs/infer/<checkpoint>-<method>[-s<N>].jsonl)")
    infer.add_argument("--samples", type=COUNT, default=1, help="samples per problem (pass@N, majority vote)")
    infer.add_argument("--temperature", type=TEMPERATURE, default=0.0)
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--prefix", default="", help='conditioning prefix, e.g. "Sub Call Budget: 8 "')
    infer.add_argument("--max-depth", type=NON_NEGATIVE, default=2, help="spawn levels below the root")
    infer.add_argument("--max-children", type=COUNT, default=16, help="children per spawn")
    infer.add_argument("--spawn-width", type=COUNT, help="run only the first N children of each spawn (a fixed width)")
    infer.add_argument("--max-thread-tokens", type=COUNT, help="new tokens per thread")
    infer.add_argument("--context", type=WINDOW, help="context window (default: the model's)")
    infer.add_argument("--within", type=WINDOW, nargs="+", metavar="TOKENS",
                       help="also report accuracy as if the context were each of these (inference.smaller_contexts)")
    infer.add_argument("--backend", choices=["transformers", "openai"], default="transformers")
    infer.add_argument("--url", nargs="+", help="server url(s) for --backend openai, e.g. http://127.0.0.1:8000; "
                       "several servers share the threads, each thread's calls staying on one")
    infer.add_argument("--join", choices=["prefix-cache", "re-prefill"], default="prefix-cache")
    infer.add_argument("--max-batch", type=COUNT, default=64, help="rows decoded together (transformers backend)")
    infer.add_argument("--max-live", type=COUNT, default=64, help="problems in flight at once")
    infer.add_argument("--threads", type=NON_NEGATIVE, default=0, help="torch threads (0: torch's default)")
    infer.add_argument("--no-progress", action="store_true")
    infer.set_defaults(fn=cmd_infer)
    rl = sub.add_parser("grpo", help="GRPO over spawn trees from an SFT checkpoint (resumes from checkpoints)")
    rl.add_argument("--profile", choices=sorted(PROFILES), help="GRPO preset (default: $APR_PROFILE or cpu)")
    rl.add_argument("--checkpoint", required=True, help="the SFT model folder, e.g. data/cpu-apr")
    rl.add_argument("--kind", choices=["apr", "sosp"], required=True, help="sosp forbids spawning")
    rl.add_argument("--problems", help="training problems of the checkpoint's task (default: the committed "
                    "data/countdown-<profile>/problems_train.jsonl; tiny uses the cpu task's)")
    rl.add_argument("--n-train", type=COUNT, help="use the first N training problems (default: all)")
    rl.add_argument("--out", help="run folder (default: runs/<profile>/grpo-<kind>)")
    for flag, kind in (("--learning-rate", float), ("--max-steps", int), ("--problems-per-step", int),
                       ("--num-generations", int), ("--beta", float), ("--epsilon", float), ("--epsilon-high", float),
                       ("--num-iterations", int), ("--eval-steps", int), ("--eval-problems", int), ("--seed", int),
                       ("--temperature", float), ("--min-well-formed", float), ("--efficiency-cap", float)):
        rl.add_argument(flag, type=kind, help="default: the profile's GRPO preset for --kind "
                        "(apr_mini.config.GRPO_PRESETS, GRPO_METHOD_CHANGES)")
    rl.add_argument("--loss-type", choices=["grpo", "dr_grpo", "dapo"])
    rl.add_argument("--scale-rewards", choices=["group", "batch", "none"])
    rl.add_argument("--sequence-weighting", choices=["tree", "sequence"])
    rl.add_argument("--trained-threads", choices=["all", "root"])
    rl.add_argument("--mask-truncated-completions", action="store_const", const=True,
                    help="give no gradient to calls cut by the context or a limit (TRL's option of that name)")
    rl.add_argument("--shuffle-rewards", action="store_const", const=True,
                    help="a placebo run: deal each group's rewards to its trees at random (RL's signal without its direction)")
    rl.add_argument("--reward", choices=["binary", "efficiency", "thread_penalty"])
    rl.add_argument("--sub-call-budgets", metavar="N,N,...", help="condition each problem's trees on 'Sub Call "
                    "Budget: N', N drawn from these (RL of a sub-call budget model, e.g. data/cpu-apr-budget)")
    rl.add_argument("--threads", type=NON_NEGATIVE, default=0, help="torch threads (0: torch's default)")
    rl.add_argument("--rollout-server", choices=["sglang"], help="decode rollouts on an SGLang server that reloads "
                                                                "the weights every step (GPU only)")
    rl.add_argument("--ship", help="after training, copy the model here (e.g. data/cpu-apr-grpo) and evaluate "
                                   "it and its SFT model on the checkpoint's validation problems")
    rl.add_argument("--ship-val", type=COUNT, default=200, help="validation problems to evaluate when shipping")
    rl.add_argument("--no-progress", action="store_true")
    rl.set_defaults(fn=cmd_grpo)
    rep = sub.add_parser("reproduce", help="the paper's three claims: every evaluation through the engine "
                                           "(resumable), then summary.json and figures")
    rep.add_argument("--profile", choices=sorted(PROFILES), help="default: $APR_PROFILE or cpu")
    rep.add_argument("--n", type=COUNT, help="problems per point (default: the profile's)")
    rep.add_argument("--out", help="results folder (default: the profile's, data/results for cpu)")
    rep.add_argument("--records", help="records folder (default: runs/reproduce/<profile>)")
    rep.add_argument("--threads", type=NON_NEGATIVE, default=0, help="torch threads (0: torch's default)")
    rep.add_argument("--no-latency", action="store_true", help="leave out the timed rounds (claim 3), which need "
                     "the machine to themselves; a later run without this flag adds them")
    rep.add_argument("--only", metavar="ROLES", help="comma-separated roles (e.g. apr_sft,sosp_room) whose untimed "
                     "records to run, and no summary: two processes, or sessions, share a long reproduction")
    rep.add_argument("--redraw", action="store_true", help="only rewrite claims.md and the figures from the "
                     "results folder's summary.json (no engine run; its depth rows from the profile's contrast summary)")
    rep.add_argument("--no-progress", action="store_true")
    rep.set_defaults(fn=cmd_reproduce)
    compare = sub.add_parser("compare", help="paired accuracy difference of two records files (infer or grpo --ship)")
    compare.add_argument("first", help="records JSONL, e.g. data/cpu-sosp-grpo/eval_after.jsonl")
    compare.add_argument("second", help="records JSONL on the same problems")
    compare.set_defaults(fn=cmd_compare)
