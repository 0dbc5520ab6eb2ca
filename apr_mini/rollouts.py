"""GRPO's rollouts: where its trees are decoded, and what of the sampling a tree keeps.

Each step of :func:`apr_mini.grpo.grpo_step` samples trees through the spawn/join engine with the
policy being trained (:func:`rollout`), either in-process (:class:`InProcessRollouts`, CPU or one
GPU) or on an inference server that loads the new weights first (:class:`ServerRollouts`, the
paper's setup). The engine keeps each call's sampled token ids and their sampling log-probabilities
in the record (``tree["calls"][k]["token_ids"]`` and ``["logprobs"]``), so GRPO trains on the ids
the policy actually drew, as TRL does, rather than on the ids its text tokenizes to again.

:func:`token_agreement` measures the difference this makes: the share of calls whose text
re-tokenizes to other ids than the sampled ones (a special token the decoder drops, characters that
spell a phrase token), and how far the training forward pass's log-probabilities of the sampled
ids sit from the sampler's (batched KV-cache decoding against one packed pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import trace_language as tl
from . import trace_trees as tt
from .countdown import Problem
from .engine import Limits, Orchestrator
from .packing import block_logps


def rollout_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


class InProcessRollouts:
    """Rollouts decoded by the training model itself, with the in-process continuous-batching
    backend (CPU or one GPU): nothing to synchronise."""

    def backend(self, model, tokenizer, max_batch: int):
        from .backends import TransformersBackend

        return TransformersBackend(model, tokenizer, max_batch=max_batch)


class ServerRollouts:
    """Rollouts on an inference server (:class:`apr_mini.serving.Server`) that loads the trained
    weights before each step's rollouts: the paper's setup, where one GPU trains and one serves.
    The weights go through ``sync_dir`` and SGLang's ``POST /update_weights_from_disk`` (``reload``
    replaces that call, e.g. for a server without the endpoint). A server's completions carry text
    only, so their rows are re-tokenized (see :func:`token_agreement` for what that changes)."""

    def __init__(self, server, sync_dir: str | Path, reload=None):
        self.server, self.sync_dir = server, Path(sync_dir)
        self.reload = reload or self.update_weights_from_disk

    def update_weights_from_disk(self, path: Path) -> None:
        import httpx

        answer = httpx.post(f"{self.server.base_url}/update_weights_from_disk", json={"model_path": str(path)},
                            timeout=600)
        if answer.status_code != 200 or not answer.json().get("success", True):
            raise RuntimeError(f"the server did not load the new weights: {answer.status_code} {answer.text[:300]}")

    def backend(self, model, tokenizer, max_batch: int):
        model.save_pretrained(str(self.sync_dir))
        tokenizer.save_pretrained(str(self.sync_dir))
        self.reload(self.sync_dir)
        return self.server.backend(concurrency=max_batch, context_window=int(model.config.max_position_embeddings))


def rollout(model, tokenizer, problems: list[Problem], *, num_generations: int, kind: str, temperature: float = 1.0,
            seed: int = 0, max_batch: int = 64, rollouts=None, prefixes: list[str] | None = None) -> list[dict]:
    """``num_generations`` sampled trees per problem through the spawn/join engine (SoS+: spawning
    forbidden), in order: the trees of problem 0, then of problem 1, ... Each call keeps its sampled
    ids and log-probs where the backend returns them. ``rollouts`` says where the trees are decoded
    (default :class:`InProcessRollouts`); ``prefixes``, one per problem, condition its trees (e.g.
    ``Sub Call Budget: 4 ``)."""
    backend = (rollouts or InProcessRollouts()).backend(model, tokenizer, max_batch)
    limits = Limits() if kind == "apr" else Limits(max_depth=0)
    engine = Orchestrator(backend, limits, temperature=temperature, seed=seed, keep_tokens=True)
    jobs = [(i * num_generations + g, p, prefixes[i] if prefixes else "") for i, p in enumerate(problems)
            for g in range(num_generations)]
    try:
        return sorted(engine.run(jobs, max_live=max(1, max_batch)), key=lambda r: r["id"])
    finally:
        if hasattr(backend, "close"):
            backend.close()


# -- from a tree to its training rows ----------------------------------------------------------

@dataclass
class Row:
    """One call of one thread of one tree: ``ids`` = prompt (BOS included) + completion ids."""

    tree: int
    thread: str
    ids: list[int]
    n_prompt: int
    advantage: float = 0.0
    truncated: bool = False       # cut by the context or a limit (no EOS, no spawn marker)
    sampled_logps: list[float] | None = None  # the sampler's log-prob of each completion id (None: re-tokenized)

    @property
    def n_completion(self) -> int:
        return len(self.ids) - self.n_prompt


@dataclass(frozen=True)
class Call:
    thread: str
    given: str          # the prompt or join text the engine gave the model
    generated: str      # what the model wrote
    eos: bool           # ended with EOS (a spawn ends with its marker, in the text)
    truncated: bool     # cut by the context or a limit
    token_ids: tuple[int, ...] = ()   # the ids the sampler drew (stop token included), where kept
    logprobs: tuple[float, ...] = ()


def tree_calls(tree: dict) -> list[Call]:
    """Every call of every thread of an engine tree; calls that generated nothing (refused before
    decoding: no room left) are left out."""
    calls = []
    for thread in tt.iter_threads(tree):
        stats = thread.get("calls", [])
        for k, (given, generated) in enumerate(tt.thread_segments(thread)):
            if generated and k < len(stats):
                stopped = stats[k].get("reason") == "stop"
                calls.append(Call(thread.get("thread", "root"), given, generated,
                                  stopped and not tl.is_spawn(generated), not stopped,
                                  tuple(stats[k].get("token_ids", ())), tuple(stats[k].get("logprobs", ()))))
    return calls


def tree_rows(tree: dict, tokenizer, index: int = 0, sampled: bool = True) -> list[Row]:
    """The training rows of one tree (see :class:`Row`): the prompt as the engine gave it to the
    model (the backend tokenizes the same text), and the completion as the sampler drew it, ids and
    log-probs, where the record kept them (``sampled``); otherwise the completion's text
    re-tokenized, plus EOS where the call ended with EOS."""
    rows = []
    for call in tree_calls(tree):
        prompt = tokenizer(call.given)["input_ids"]
        if sampled and call.token_ids:
            completion, logps = list(call.token_ids), list(call.logprobs)
        else:
            completion = tokenizer(call.generated, add_special_tokens=False)["input_ids"]
            completion += [tokenizer.eos_token_id] if call.eos else []
            logps = None
        rows.append(Row(index, call.thread, prompt + completion, len(prompt), truncated=call.truncated,
                        sampled_logps=logps))
    return rows


def token_agreement(records: list[dict], tokenizer, model=None, trees: list[list[Row]] | None = None,
                    temperature: float = 1.0) -> dict:
    """How the sampled ids of ``records`` (rollouts that kept them) compare with re-tokenizing each
    call's text: calls and tokens, the share of calls whose ids differ, the tokens those calls gain
    or lose, and the sampled tokens the text drops (special tokens the decoder skips). With
    ``model``, also the gap between the sampler's log-probabilities and one packed training forward
    pass over the sampled ids at the sampling ``temperature`` (mean and max absolute difference per
    token, in nats). ``trees``: each
    record's :func:`tree_rows`, where the caller has them already."""
    calls = differ = length_change = tokens = 0
    dropped: dict[str, int] = {}
    rows = []
    for index, record in enumerate(records):
        retokenized = tree_rows(record["tree"], tokenizer, index, sampled=False)
        sampled = trees[index] if trees else tree_rows(record["tree"], tokenizer, index)
        for again, row in zip(retokenized, sampled):
            if row.sampled_logps is None:
                continue
            calls += 1
            tokens += row.n_completion
            if again.ids != row.ids:
                differ += 1
                length_change += abs(again.n_completion - row.n_completion)
            for token in row.ids[row.n_prompt:]:
                if token in tokenizer.all_special_ids and token != tokenizer.eos_token_id:
                    name = tokenizer.convert_ids_to_tokens(token)
                    dropped[name] = dropped.get(name, 0) + 1
            rows.append(row)
    report = {"calls": calls, "tokens": tokens, "calls_that_differ": differ / max(1, calls),
              "tokens_gained_or_lost": length_change, "special_tokens_sampled": dropped}
    if model is not None and rows:
        model.train()  # the packed attention applies in training mode; the small Llamas have no dropout
        with torch.no_grad():
            gaps = torch.cat([(lp - torch.tensor(r.sampled_logps)).abs()
                              for r in rows for lp in block_logps(model, [r], temperature)[0]])
        report.update(logp_gap_mean=float(gaps.mean()), logp_gap_max=float(gaps.max()))
    return report
