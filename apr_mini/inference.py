"""Evaluation runs through the spawn/join engine: resumable JSONL, baselines and summary metrics.

Paper section 5: APR against SoS+ (sequential decoding), and against self-consistency and best-of-N
(pass@N with the verifier) built from N SoS+ samples, on accuracy, total tokens, the longest
sequence, the critical path and latency. Every method runs on the same engine
(:mod:`apr_mini.engine`), so they are measured the same way:

- ``apr``: the APR model, spawning within :class:`~apr_mini.engine.Limits`;
- ``sosp``: the SoS+ model, with spawning forbidden (``max_depth=0``);
- ``samples > 1``: N samples per problem at a temperature; :func:`summarize` reports the first
  sample's accuracy, pass@N (best-of-N with the exact verifier) and the majority vote over the
  samples' solutions (self-consistency).

Each finished sample is one JSON line, appended as soon as it finishes, so a killed run resumes
where it stopped (``run_eval`` skips the samples already in the file); the run's settings are stored
next to it and a resume with other settings is refused.

:func:`evaluate` is the quick check that SFT runs during training and when it ships a model: the
parent decoded alone, its children from their prompts, and the share the whole engine solves.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean

from tqdm.auto import tqdm

from . import trace_language as tl

from . import trace_trees as tt
from .config import UserFacingError
from .countdown import Problem, is_solvable
from .data import drop_torn_tail, read_jsonl
from .engine import CONTEXT_FULL, Backend, Limits, Orchestrator
from .generation import generate


class ResumeMismatch(UserFacingError, ValueError):
    pass


@dataclass(frozen=True)
class EvalSettings:
    method: str = "apr"              # "apr" or "sosp"
    samples: int = 1                 # per problem; > 1 gives pass@N and majority vote
    temperature: float = 0.0
    seed: int = 0
    prefix: str = ""                 # a conditioning prefix for the root, e.g. "Sub Call Budget: 8 "
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if self.method not in ("apr", "sosp"):
            raise ValueError(f"method must be 'apr' or 'sosp', not {self.method!r}")
        if self.samples < 1 or self.temperature < 0:
            raise ValueError(f"samples must be at least 1 and temperature at least 0, got {self.samples} and "
                             f"{self.temperature}")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError("several samples per problem need a temperature > 0 (greedy samples are identical)")

    def engine_limits(self) -> Limits:
        return Limits(**{**asdict(self.limits), "max_depth": 0}) if self.method == "sosp" else self.limits

    def to_dict(self) -> dict:
        settings = asdict(self)
        if self.limits.spawn_width is None:  # records written before the width existed stay resumable
            del settings["limits"]["spawn_width"]
        return settings


def _sample_key(problem: int, sample: int, samples: int) -> int:
    return problem * samples + sample


def check_resume(out: str | Path, problems: list[Problem], settings: EvalSettings, model: str = "") -> None:
    """Refuse to append to ``out`` if it was started with other settings, problems or model, or if its
    settings file is gone (then nothing says what its records are); cheap, so call it before loading
    a model. A torn last line (a kill mid-write) is dropped here, to be redone."""
    out = Path(out)
    meta_path = out.with_suffix(".settings.json")
    drop_torn_tail(out)
    started = out.exists() and out.stat().st_size > 0
    if started and not meta_path.exists():
        raise ResumeMismatch(f"{out} holds records but its settings file {meta_path.name} is missing, so nothing says "
                             "how they were made; delete it to start fresh, or pass another output path")
    if started and json.loads(meta_path.read_text()) != _run_meta(problems, settings, model):
        raise ResumeMismatch(f"{out} was started with other settings, problems or model ({meta_path}); "
                             "pass another output path or delete both files to start over")


def run_eval(backend: Backend, problems: list[Problem], out: str | Path, settings: EvalSettings = EvalSettings(),
             *, max_live: int = 64, progress: bool = True, model: str = "") -> list[dict]:
    """Run every (problem, sample) not yet in ``out`` (JSONL), appending each as it finishes; return
    all records of the file, sorted by problem and sample. ``model`` names the model (e.g.
    :func:`checkpoint_fingerprint`): a file started with another model is not resumed
    (:func:`check_resume`). Each record is one unbuffered write of one line, so a kill leaves at most
    a torn last line, which the next run drops and redoes. A backend that becomes unreachable
    (:class:`~apr_mini.engine.BackendUnavailable`) stops the run: nothing unfinished is written, so a
    rerun does it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_resume(out, problems, settings, model)
    out.with_suffix(".settings.json").write_text(json.dumps(_run_meta(problems, settings, model), indent=1))
    done = {(r["id"], r["sample"]) for r in read_jsonl(out)} if out.exists() and out.stat().st_size else set()
    todo = [(_sample_key(i, k, settings.samples), p) for i, p in enumerate(problems) for k in range(settings.samples)
            if (i, k) not in done]
    engine = Orchestrator(backend, settings.engine_limits(), temperature=settings.temperature, seed=settings.seed,
                          prefix=settings.prefix)
    with open(out, "ab", buffering=0) as sink, tqdm(total=len(todo), disable=not progress,
                                                     desc=f"{settings.method} eval") as bar:
        for record in engine.run(todo, max_live=max_live):
            record["id"], record["sample"] = divmod(record["id"], settings.samples)
            sink.write((json.dumps(record) + "\n").encode())
            bar.update()
    return sorted(read_jsonl(out), key=lambda r: (r["id"], r["sample"]))


def _run_meta(problems: list[Problem], settings: EvalSettings, model: str) -> dict:
    return json.loads(json.dumps({"settings": settings.to_dict(), "model": model, "problems": [p.to_dict() for p in problems]}))


def run_is_complete(out: str | Path, problems: list[Problem], settings: EvalSettings = EvalSettings(),
                    model: str = "") -> bool:
    """Whether :func:`run_eval` with these arguments would have nothing left to do."""
    out = Path(out)
    meta_path = out.with_suffix(".settings.json")
    if not (out.exists() and meta_path.exists()) or json.loads(meta_path.read_text()) != _run_meta(problems, settings, model):
        return False
    drop_torn_tail(out)
    return len({(r["id"], r["sample"]) for r in read_jsonl(out)}) == len(problems) * settings.samples


def checkpoint_fingerprint(checkpoint: str | Path) -> str:
    """The checkpoint folder's name and a hash of its weights: retrained weights at the same path differ."""
    import hashlib

    weights = Path(checkpoint) / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else "no local weights"
    return f"{Path(checkpoint).name} {digest}"


def solution_key(result: str | None) -> str | None:
    """A result's operations in order, e.g. ``"12-3=9;9*4=36"``: what self-consistency votes on."""
    if result is None:
        return None
    try:
        steps, _, reached = tl.result_steps(result)
    except tl.TraceFormatError:
        return None
    return ";".join(map(str, steps)) if reached and steps else None


# one finished run's records, by (role, training seed, run name), e.g. ("apr_sft", 0, "window-512")
Records = Callable[[str, int, str], list[dict]]


def problem_rows(records: list[dict]) -> list[dict]:
    """One row per problem (in order of id): its first sample's ``accuracy``, ``pass_at_n`` (any
    sample verified), ``majority`` (the most common solution verified; ties: the first to appear) and
    costs summed (tokens) or maxed (sequences, latency) over its samples."""
    by_problem: dict[int, list[dict]] = {}
    for record in records:
        by_problem.setdefault(record["id"], []).append(record)
    rows = []
    for problem, samples in sorted(by_problem.items()):
        samples.sort(key=lambda r: r["sample"])
        votes = Counter(k for k in (solution_key(r["result"]) for r in samples) if k is not None)
        winner = votes.most_common(1)[0][0] if votes else None
        majority = any(r["verified"] for r in samples if winner is not None and solution_key(r["result"]) == winner)
        metrics = [r["metrics"] for r in samples]
        rows.append({
            "id": problem, "accuracy": samples[0]["verified"], "pass_at_n": any(r["verified"] for r in samples),
            "majority": majority,
            "total_tokens": sum(m["total_tokens"] for m in metrics),
            "longest_sequence": max(m["longest_sequence"] for m in metrics),
            "critical_path": max(m["critical_path"] for m in metrics),
            "children": sum(m["n_threads"] - 1 for m in metrics) / len(metrics),
            "spawn_depth": max(m["spawn_depth"] for m in metrics),
            "latency_s": max(m["latency_s"] for m in metrics),
            "prefill_tokens": sum(m["prefill_tokens"] for m in metrics),
            "decode_tokens": sum(m["decode_tokens"] for m in metrics),
            "failed_threads": sum(len(m["failures"]) for m in metrics),
        })
    return rows


def summarize(records: list[dict]) -> dict:
    """Accuracy and cost of a run, the mean of :func:`problem_rows`. With several samples per
    problem, ``accuracy`` is the first sample's; costs are per problem, summed over samples."""
    rows = problem_rows(records)
    if not rows:
        return {"problems": 0}
    summary = {"problems": len(rows), "samples": len(records) // len(rows)}
    for name in rows[0]:
        if name != "id":
            summary[name] = round(mean(float(r[name]) for r in rows), 4)
    summary["spawn_depth"] = max(r["spawn_depth"] for r in rows)
    return summary


def evaluate_model(model, tokenizer, problems: list[Problem], *, method: str = "apr", max_batch: int = 64,
                   limits: Limits = Limits()) -> tuple[list[dict], dict]:
    """Greedy records (one sample per problem, in order) and their :func:`summarize` for a model in
    memory, through the in-process engine; the model is left in the mode it was in."""
    from .backends import TransformersBackend

    was_training = model.training
    settings = EvalSettings(method=method, limits=limits)
    engine = Orchestrator(TransformersBackend(model, tokenizer, max_batch=max_batch), settings.engine_limits())
    records = sorted(engine.run(enumerate(problems), max_live=max_batch), key=lambda r: r["id"])
    model.train(was_training)
    for record in records:
        record["sample"] = 0
    return records, summarize(records)


def smaller_contexts(records: list[dict], windows) -> dict[int, dict]:
    """For each context window: ``verified``, the share of problems whose first sample verified with
    every sequence inside the window (what the same model scores with that smaller context), and
    ``longer``, the share that does not fit (a sequence longer than the window, or one the run's own
    context already cut off). ``verified`` is exact for a greedy SoS+ run (a greedy trace cut at the
    window is the same trace up to there) and a lower bound for APR (with less room a cut-off child
    fails, and its parent may still solve the problem)."""
    first = [r for r in records if r["sample"] == 0]
    n = max(1, len(first))
    return {w: {"verified": sum(r["verified"] and fits_window(r, w) for r in first) / n,
                "longer": sum(not fits_window(r, w) for r in first) / n} for w in windows}


def fits_window(record: dict, window: int) -> bool:
    """Whether every call of a finished problem fits a context window and none was cut off by the
    run's own context. A call takes its prompt, BOS and new tokens (EOS included, when the backend
    samples one) as the backend counted them, which is what a run with that window would have room for."""
    if CONTEXT_FULL in record["metrics"]["failures"]:
        return False
    return all(call["prompt_tokens"] + call["new_tokens"] <= window
               for thread in tt.iter_threads(record["tree"]) for call in thread.get("calls", []))


def summary_table(summaries: dict[str, dict]) -> str:
    """A Markdown table, one row per named run."""
    columns = ["problems", "samples", "accuracy", "pass_at_n", "majority", "total_tokens", "longest_sequence",
               "critical_path", "children", "spawn_depth", "latency_s", "prefill_tokens", "decode_tokens",
               "failed_threads"]
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, summary in summaries.items():
        lines.append(f"| {name} | " + " | ".join(str(summary.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def open_backend(checkpoint: str | Path, *, kind: str = "transformers", join: str = "prefix-cache",
                 url: str | list[str] | None = None, max_batch: int = 64, device: str | None = None,
                 context_window: int | None = None):
    """A backend for a checkpoint folder: in-process transformers (on ``get_device()``), or an
    OpenAI-compatible server already serving it at ``url``, or several (a list: threads are spread over
    them; checked before it is returned; the context window comes from the checkpoint's config unless
    ``context_window`` is given)."""
    if kind == "openai":
        from .serving import OpenAIBackend

        if not url:
            raise ValueError("the openai backend needs the server's url, e.g. http://127.0.0.1:8000")
        backend = OpenAIBackend(url, str(checkpoint), context_window=context_window)
        backend.check()
        return backend
    if kind != "transformers":
        raise ValueError(f"backend must be 'transformers' or 'openai', not {kind!r}")
    from .backends import TransformersBackend
    from .config import get_device
    from .models import load_model
    from .tokenizer import load_tokenizer

    model = load_model(checkpoint, device or get_device(verbose=False))
    return TransformersBackend(model, load_tokenizer(checkpoint), join=join, max_batch=max_batch)


# ---------------------------------------------------------------------------------------------
# Evaluation without the parallel engine
# ---------------------------------------------------------------------------------------------

def evaluate_checkpoint(checkpoint: str | Path, problems: list[Problem], *, kind: str,
                        temperature: float = 0.0) -> dict:
    """Load a saved model and tokenizer and :func:`evaluate` them."""
    from .models import load_model
    from .tokenizer import load_tokenizer

    model, tokenizer = load_model(checkpoint), load_tokenizer(checkpoint)
    return evaluate(model, tokenizer, problems, kind=kind, temperature=temperature)


def evaluate(model, tokenizer, problems: list[Problem], *, kind: str = "sosp", temperature: float = 0.0,
             batch_size: int = 64) -> dict:
    """SoS+: sample a trace per problem and verify it. APR: sample the parent; where it spawns, check
    the spawn is well-formed, run the children from their prompts and verify their results on their
    own sub-problems; and, as ``engine_verified``, the share of problems the full spawn/join engine
    (notebook 04) solves with this model."""
    prompts = [tl.root_prompt(p.target, p.nums) for p in problems]
    parents = generate(model, tokenizer, prompts, temperature=temperature, batch_size=batch_size)
    texts = [s.prompt + s.completion for s in parents]
    verdicts = [tl.verify_trace(t, p.nums, p.target) for t, p in zip(texts, problems)]
    scores = {
        "n": len(problems),
        "verified": round(sum(map(bool, verdicts)) / max(1, len(problems)), 4),
        "finished": round(sum(s.finished for s in parents) / max(1, len(problems)), 4),
        "mean_new_tokens": round(sum(s.new_tokens for s in parents) / max(1, len(problems)), 1),
    }
    if kind == "apr":
        from .backends import TransformersBackend
        from .engine import run_problems

        scores.update(evaluate_children(model, tokenizer, texts, temperature=temperature, batch_size=batch_size))
        was_training = model.training
        records = run_problems(TransformersBackend(model, tokenizer, max_batch=batch_size), problems,
                               temperature=temperature)
        model.train(was_training)
        scores["engine_verified"] = round(sum(r["verified"] for r in records) / max(1, len(problems)), 4)
    return scores


def evaluate_children(model, tokenizer, parent_texts: list[str], *, temperature: float = 0.0,
                      batch_size: int = 64) -> dict:
    """For parents that end in a spawn: how many spawns parse, and how many children solve their
    sub-problem (among children whose sub-problem is solvable at all)."""
    spawning = [t for t in parent_texts if tl.is_spawn(t)]
    child_prompts, bad_spawns = [], 0
    for text in spawning:
        try:
            child_prompts.extend(tl.child_prompts(text))
        except tl.TraceFormatError:
            bad_spawns += 1
    children = generate(model, tokenizer, child_prompts, temperature=temperature, batch_size=batch_size)
    solvable = solved = 0
    for child in children:
        node = tl.parse_prompt(child.prompt)
        if is_solvable(node.nums, node.target):
            solvable += 1
            solved += bool(tl.verify_trace(child.prompt + child.completion, node.nums, node.target))
    return {
        "spawn_rate": round(len(spawning) / max(1, len(parent_texts)), 4),
        "spawns_well_formed": round((len(spawning) - bad_spawns) / max(1, len(spawning)), 4),
        "children": len(children),
        "children_solvable": solvable,
        "children_solved_of_solvable": round(solved / max(1, solvable), 4),
    }
