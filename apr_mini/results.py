"""The paper's three claims at our scale: accuracy against context window, total tokens and latency.

Paper abstract and section 5: APR beats SoS+ (1) within the same context window, (2) at the same
total tokens, against SoS+'s pass@k and majority@k, and (3) at the same wall-clock latency; RL adds
accuracy and makes the search wider. ``python -m apr_mini reproduce`` (``make reproduce``) measures
all of it through the spawn/join engine and writes ``summary.json`` and the figures:

- **context**: every model (SFT seeds, GRPO) at each window of ``windows``. A greedy SoS+ trace cut
  at a smaller window is the same trace up to there, so SoS+ runs once, at the largest window, and
  the smaller ones are derived (:func:`apr_mini.inference.smaller_contexts`); one real run at
  ``derivation_window`` checks that. APR runs at every window: a cut-off child can still leave its
  parent a way on, so nothing is derived.
- **compute**: the budget-conditioned models at each budget (greedy), and ``max(ks)`` samples per
  problem from the SFT models for pass@k and majority@k (the first k samples).
- **latency**: the greedy points again on the first problems, one problem at a time (the paper's
  setting), in back-to-back rounds that alternate the methods, since this machine's speed drifts;
  with the critical-path floor (the tokens decoded one after another on the critical path, times the
  single-stream time per decoded token).

Every run is a resumable records file (:func:`apr_mini.inference.run_eval`): a killed reproduction
loses no finished problem and a second one adds only what is missing. The summary (points, claims,
intervals that resample problems and training seeds, the README's block) is :mod:`apr_mini.claims`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from . import trace_language as tl
from .claims import ROLES, claims_markdown, depth_rows, own_window, summarize_reproduction
from .config import ReproduceConfig, UserFacingError
from .data import load_problems
from .engine import Limits
from .inference import EvalSettings, checkpoint_fingerprint


# ---------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One engine run: a model (role and seed) on problems under one setting."""

    role: str
    seed: int
    name: str                      # e.g. "window-512", "budget-4", "samples-8", "latency-r0-greedy"
    settings: EvalSettings
    n_problems: int
    max_live: int = 64

    @property
    def method(self) -> str:
        return self.role.split("_")[0]


def available_models(config: ReproduceConfig) -> tuple[dict[str, list[str]], list[str]]:
    """The checkpoints of each role that exist, and those that don't (reported as missing, with the
    step where a GRPO run collapsed when its ``collapsed.json`` is there instead of a model)."""
    present, missing = {}, []
    for role in ROLES:
        present[role] = [c for c in getattr(config, role) if (Path(c) / "config.json").exists()]
        for absent in (c for c in getattr(config, role) if c not in present[role]):
            collapse = Path(absent) / "collapsed.json"
            step = json.loads(collapse.read_text())["collapsed_at_step"] if collapse.exists() else None
            missing.append(f"{absent} (its GRPO run collapsed at step {step})" if step else absent)
    return present, missing


def _greedy(method: str, context: int, prefix: str = "") -> EvalSettings:
    return EvalSettings(method=method, prefix=prefix, limits=Limits(context=context))


def plan(config: ReproduceConfig, models: dict[str, list[str]]) -> list[Run]:
    """Every engine run of the reproduction, grouped by model (each model is loaded once)."""
    full, n = config.windows[-1], config.n_problems
    runs = []
    for role, checkpoints in models.items():
        method = role.split("_")[0]
        for seed, _ in enumerate(checkpoints):
            if role in ("sosp_sft", "sosp_grpo"):
                runs.append(Run(role, seed, f"window-{full}", _greedy(method, full), n))
                if role == "sosp_sft" and seed == 0:
                    window = config.derivation_window
                    runs.append(Run(role, seed, f"window-{window}", _greedy(method, window), n))
            elif role == "sosp_room":
                runs.append(Run(role, seed, f"window-{config.room_window}", _greedy(method, config.room_window), n))
            elif role in ("apr_sft", "apr_grpo"):
                runs += [Run(role, seed, f"window-{w}", _greedy(method, w), n) for w in config.windows]
            else:
                kind, budgets = ("tokens", config.token_budgets) if method == "sosp" else \
                    ("sub_calls", config.sub_call_budgets)
                runs += [Run(role, seed, f"budget-{b}", _greedy(method, full, tl.condition_prefix(kind, b)), n)
                         for b in budgets]
            if role in ("sosp_sft", "apr_sft") and seed < config.sample_seeds and max(config.ks) > 1:
                sampled = EvalSettings(method=method, samples=max(config.ks), temperature=config.temperature,
                                       seed=seed, limits=Limits(context=full))
                runs.append(Run(role, seed, f"samples-{max(config.ks)}", sampled, n))
    return runs


def latency_plan(config: ReproduceConfig, runs: list[Run]) -> list[Run]:
    """The timed runs: each greedy point of seed 0 of the ``timed_roles`` on the first ``latency_problems``
    problems, one problem at a time; rounds one after the other, SoS+ and APR points alternating within
    a round."""
    points = [r for r in runs if r.seed == 0 and r.settings.samples == 1 and r.role in config.timed_roles
              and (r.name.startswith("budget") or r.name == f"window-{config.windows[-1]}" or r.role == "sosp_room")]
    sosp = [r for r in points if r.method == "sosp"]
    apr = [r for r in points if r.method == "apr"]
    order = [r for pair in zip(sosp, apr) for r in pair] + sosp[len(apr):] + apr[len(sosp):]
    return [replace(r, name=f"latency-r{k}-{r.name}", n_problems=config.latency_problems, max_live=1)
            for k in range(config.latency_rounds) for r in order]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def _find(runs: list[Run], role: str, seed: int, name: str) -> Run:
    return next(r for r in runs if (r.role, r.seed, r.name) == (role, seed, name))


def records_path(config: ReproduceConfig, run: Run) -> Path:
    return Path(config.records) / f"{run.role}-seed{run.seed}" / f"{run.name}.jsonl"


def execute(config: ReproduceConfig, models: dict[str, list[str]], runs: list[Run], fingerprints: dict[str, str], *,
            progress: bool = True) -> None:
    """Do every run whose records are not complete, loading each model once (``fingerprints``: each
    checkpoint's :func:`~apr_mini.inference.checkpoint_fingerprint`)."""
    from .engine import run_problems
    from .inference import open_backend, run_eval, run_is_complete

    problems = load_problems(config.problems)[: config.n_problems]
    todo = [r for r in runs if not run_is_complete(records_path(config, r), problems[: r.n_problems], r.settings,
                                                   fingerprints[models[r.role][r.seed]])]
    backends: dict[tuple[str, int], object] = {}
    warm: set[tuple[str, int]] = set()
    with tqdm(total=len(runs), initial=len(runs) - len(todo), desc="reproduce", disable=not progress) as bar:
        for run in todo:
            checkpoint = models[run.role][run.seed]
            key = (run.role, run.seed)
            if key not in backends:
                if run.max_live > 1:
                    backends.clear()  # one model in memory at a time, except for the timed rounds that alternate
                backends[key] = open_backend(checkpoint, max_batch=config.max_batch)
            if run.max_live == 1 and key not in warm:  # a model's first call pays one-off costs: keep them off the clock
                run_problems(backends[key], problems[:1], limits=run.settings.engine_limits(), prefix=run.settings.prefix)
                warm.add(key)
            bar.set_postfix_str(f"{run.role} seed {run.seed} {run.name}")
            run_eval(backends[key], problems[: run.n_problems], records_path(config, run), run.settings,
                     max_live=run.max_live, progress=False, model=fingerprints[checkpoint])
            bar.update()


def load_records(config: ReproduceConfig, run: Run) -> list[dict]:
    from .data import read_jsonl

    return read_jsonl(records_path(config, run))


def reproduce(config: ReproduceConfig, *, progress: bool = True, command: str = "", figures: bool = True,
              latency: bool = True, only: tuple[str, ...] = ()) -> dict | None:
    """Run (or resume) every evaluation, then write ``summary.json`` and the figures to ``config.out``.
    ``latency=False`` leaves out the timed rounds, which need the machine to themselves. ``only``
    (roles, e.g. ``("apr_sft",)``) runs just those roles' untimed records and writes no summary: a
    long reproduction split across processes or sessions, the records shared."""
    models, missing = available_models(config)
    if not (models["sosp_sft"] and models["apr_sft"]):
        raise UserFacingError(f"reproduce needs at least the SFT models; missing: {', '.join(missing)}")
    if not Path(config.problems).exists():
        raise UserFacingError(f"no problems file at {config.problems}")
    unknown = sorted(set(only) - set(ROLES))
    if unknown:
        raise UserFacingError(f"unknown role(s) {', '.join(unknown)}; the roles are {', '.join(ROLES)}")
    runs = plan(config, models)
    timed = latency_plan(config, runs) if latency and not only else []
    start = time.time()
    fingerprints = {c: checkpoint_fingerprint(c) for checkpoints in models.values() for c in checkpoints}
    execute(config, models, [r for r in runs if r.role in only] if only else runs + timed, fingerprints,
            progress=progress)
    if only:
        return None
    every = runs + timed
    summary = summarize_reproduction(config, models, fingerprints, missing,
                                     lambda role, seed, name: load_records(config, _find(every, role, seed, name)),
                                     timed, command)
    summary["seconds_this_session"] = round(time.time() - start, 1)
    attach_depth(config, summary)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "claims.md").write_text(claims_markdown(summary) + "\n")
    save_trees(config, models, runs, out / "trees")
    if figures:
        from .plots import write_claim_figures

        write_claim_figures(summary, out)
    return summary


def attach_depth(config: ReproduceConfig, summary: dict) -> bool:
    """Set ``summary["depth"]`` (:func:`apr_mini.claims.depth_rows`) from ``config.contrast``, the other
    task's summary, where it is there (and say whether it was); without it the depth figure is left out."""
    if not (config.contrast and Path(config.contrast).is_file()):
        return False
    other = json.loads(Path(config.contrast).read_text())
    summary["depth"] = depth_rows({other["config"].get("task", ReproduceConfig.task): other, config.task: summary})
    return True


def save_trees(config: ReproduceConfig, models: dict[str, list[str]], runs: list[Run], folder: Path) -> None:
    """The first seed's records at the full window, gzipped (trees for the explorer): the per-problem
    view of notebook 06 opens them without the records folder."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for role in ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo", "sosp_room"):
        if models[role]:
            run = _find(runs, role, 0, f"window-{own_window(config, role)}")
            with open(folder / f"{role}.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                f.write(records_path(config, run).read_bytes())


def load_trees(results_dir: str | Path, role: str) -> list[dict]:
    """The records :func:`save_trees` wrote for ``role`` (e.g. ``"apr_sft"``), in problem order."""
    import gzip

    with gzip.open(Path(results_dir) / "trees" / f"{role}.jsonl.gz", "rt") as f:
        return sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["id"])


