"""The in-process backend of the spawn/join engine: a thread's tokens from a Hugging Face model.

Paper section 4.3 runs APR's threads on SGLang, whose radix cache keeps a parent's prefix so that a
join only prefills the new text. :class:`TransformersBackend` implements the engine's
:class:`apr_mini.engine.Backend` interface in-process, on CPU or GPU, with a hand-written
continuous-batching decode loop: every running thread owns one row of KV buffers preallocated for
the whole batch (:class:`_SlotLayer`); new threads are prefilled and written into free rows, and a
finished thread's row is refilled by the last one, so the batch's cache is never copied as threads
come and go (copying it was half the time of an earlier left-padded design). Two join strategies,
selectable and compared in notebook 04:

- ``"prefix-cache"`` keeps each thread's KV after a spawn and, when the joined text comes back,
  reuses the longest common token prefix, so only the join text is prefilled (what SGLang's radix
  cache does for APR);
- ``"re-prefill"`` prefills the whole joined text again (ThreadWeaver's engine-agnostic way).

Servers (SGLang, vLLM, ``transformers serve``) are reached through :mod:`apr_mini.serving`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Hashable

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from . import trace_language as tl
from .engine import Completion, Request


@dataclass(eq=False)
class _Row:
    request: Request
    ids: list[int]              # every token fed or to be fed: the prompt, then the new tokens
    cached: int                 # prompt tokens whose KV came from the thread's previous call
    new: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # of each new token, under the sampling distribution
    generator: torch.Generator | None = None

    @property
    def in_cache(self) -> int:
        """Tokens whose KV the batch's cache holds: all but the last sampled token, fed next."""
        return len(self.ids) + len(self.new) - 1


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _stack_left_padded(parts: list[torch.Tensor | None], width: int, like: torch.Tensor) -> torch.Tensor:
    """One-row tensors ``[1, heads, n, head_dim]`` (``None``: no tokens) stacked and left-padded with
    zeros to ``width`` columns (padding is masked out, but must be finite: 0 x NaN is NaN)."""
    out = like.new_zeros(len(parts), like.shape[1], width, like.shape[3])
    for i, part in enumerate(parts):
        if part is not None:
            out[i, :, width - part.shape[2]:] = part[0]
    return out


# The attention scores one prefill may hold per head (rows x new tokens x all columns). A batch padded
# to its longest uncached prompt otherwise costs rows x that length squared: deep trees' evaluations
# at a 1,536-token window peaked at 7.8 GB with 64 rows admitted at once.
PREFILL_SCORES = 1 << 24


def _prefill_groups(rows: list[_Row]) -> list[list[int]]:
    """Indices of ``rows`` in prefill batches whose padded attention stays within
    :data:`PREFILL_SCORES`: all in one batch, in order, when they fit; else sorted by uncached length
    and cut greedily."""
    def cost(group: list[int]) -> int:
        new = max(len(rows[i].ids) - rows[i].cached for i in group)
        return len(group) * new * (new + max(rows[i].cached for i in group))

    everything = list(range(len(rows)))
    if cost(everything) <= PREFILL_SCORES:
        return [everything]
    groups: list[list[int]] = [[]]
    for i in sorted(everything, key=lambda i: len(rows[i].ids) - rows[i].cached):
        if groups[-1] and cost(groups[-1] + [i]) > PREFILL_SCORES:
            groups.append([])
        groups[-1].append(i)
    return groups


class _SlotLayer(DynamicLayer):
    """One layer of the running batch's KV cache as one decode step sees it.

    Row ``i`` of the batch keeps its ``n_i`` tokens in columns ``0..n_i-1`` of row ``i`` of
    preallocated buffers. The step writes each row's new token at that row's own next column, in
    place, and attention reads the first ``width`` columns through a view. So nothing is copied when
    rows join the batch (they are written into free rows) or leave it (the last row moves into the
    freed one), and the width follows the longest row still running."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor,
                 width: int):
        super().__init__()
        self.is_initialized = True
        self.buffers, self.rows, self.columns, self.width = (keys, values), rows, columns, width

    def update(self, key_states, value_states, *args, **kwargs):
        for buffer, states in zip(self.buffers, (key_states, value_states)):
            buffer[self.rows, :, self.columns] = states[:, :, 0]
        n = len(self.rows)
        return self.buffers[0][:n, :, :self.width], self.buffers[1][:n, :, :self.width]

    def get_seq_length(self) -> int:
        return self.width - 1


class TransformersBackend:
    """Continuous batching over a Hugging Face causal LM (see the module docstring).

    Sampling is per row with the request's own seed, so a thread's text does not depend on which
    other threads share its batch (up to floating-point noise of batched matmuls)."""

    def __init__(self, model, tokenizer, *, join: str = "prefix-cache", max_batch: int = 64):
        if join not in ("prefix-cache", "re-prefill"):
            raise ValueError(f"join must be 'prefix-cache' or 're-prefill', not {join!r}")
        if max_batch < 1:  # 0 rows would never decode: the engine would wait forever
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.tokenizer, self.join, self.max_batch = model.eval(), tokenizer, join, max_batch
        self.device = next(model.parameters()).device
        self.context_window = int(model.config.max_position_embeddings)
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(tl.SPAWN_CLOSE)}
        self.waiting: list[Request] = []
        self.rows: list[_Row] = []  # row i of the running batch lives in row i of the KV buffers
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: [rows, heads, columns, head_dim]
        self.saved: dict[Hashable, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.forward_calls = 0
        # transformers 5.24 renamed `past_key_values` to `cache` (the GPU environment pins 5.19: the old name)
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def release(self, key: Hashable) -> None:
        self.saved.pop(key, None)

    @torch.inference_mode()
    def step(self, requests: list[Request]) -> list[Completion]:
        self.waiting.extend(requests)
        done: list[Completion] = []
        while not done and (self.rows or self.waiting):
            room = self.max_batch - len(self.rows)
            if room > 0 and self.waiting:
                admitted, self.waiting = self.waiting[:room], self.waiting[room:]
                done += self._admit(admitted)
            if not done and self.rows:
                done += self._decode()
        return done

    # -- model calls ----------------------------------------------------------------------------

    def _forward(self, input_ids, mask, positions, layers):
        """Logits of each row's last position; ``layers`` (the KV cache) are updated in place."""
        cache = DynamicCache()
        cache.layers.extend(layers)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self.cache_argument: cache})
        self.forward_calls += 1
        return out.logits[:, -1, :], cache.layers

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> None:
        """Append each row's next token (greedy, or Gumbel-max at the request's temperature) and its
        log-probability under the distribution it was drawn from (the model's own when greedy)."""
        logits = logits.float()
        temperatures = torch.tensor([r.request.temperature or 1.0 for r in rows], device=logits.device)
        logps = (logits / temperatures[:, None]).log_softmax(-1)
        tokens = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            if row.request.temperature > 0:
                noise = torch.rand(logits.shape[-1], generator=row.generator).clamp_(1e-12, 1.0)
                gumbel = -torch.log(-torch.log(noise)).to(logits.device)
                tokens[i] = int((logits[i] / row.request.temperature + gumbel).argmax())
        chosen = logps.gather(-1, torch.tensor(tokens, device=logits.device)[:, None]).squeeze(-1).tolist()
        for row, token, logp in zip(rows, tokens, chosen):
            row.new.append(token)
            row.logprobs.append(logp)

    def _admit(self, requests: list[Request]) -> list[Completion]:
        """Prefill the requests (after any cached prefix) as left-padded batches of bounded size (see
        :func:`_prefill_groups`), then write each one's KV into a free row of the running batch."""
        rows, pasts = [], []
        for request in requests:
            ids = self.tokenizer(request.text)["input_ids"]
            cached_ids, cached_kv = self.saved.pop(request.key, ([], None))
            keep = min(_common_prefix(cached_ids, ids), len(ids) - 1) if self.join == "prefix-cache" else 0
            row = _Row(request, ids, keep)
            if request.temperature > 0:
                row.generator = torch.Generator().manual_seed(request.seed)
            rows.append(row)
            pasts.append([(k[:, :, :keep], v[:, :, :keep]) for k, v in cached_kv] if keep else None)
        for group in _prefill_groups(rows):
            self._prefill([rows[i] for i in group], [pasts[i] for i in group])
        return self._collect()

    def _prefill(self, rows: list[_Row], pasts: list) -> None:
        """One left-padded prefill of ``rows`` (their cached prefixes in ``pasts``); each row's first
        token is sampled and its KV moves into the running batch."""
        past_width = max(r.cached for r in rows)
        new_width = max(len(r.ids) - r.cached for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), new_width), pad, dtype=torch.long)
        positions = torch.zeros((len(rows), new_width), dtype=torch.long)
        mask = torch.zeros((len(rows), past_width + new_width), dtype=torch.long)
        for i, row in enumerate(rows):
            fresh = row.ids[row.cached:]
            input_ids[i, new_width - len(fresh):] = torch.tensor(fresh)
            positions[i, new_width - len(fresh):] = torch.arange(row.cached, len(row.ids))
            mask[i, past_width - row.cached:past_width] = 1
            mask[i, past_width + new_width - len(fresh):] = 1
        layers = []
        if past_width:
            template = next(p for p in pasts if p is not None)
            for layer, (k0, _) in enumerate(template):
                layers.append(DynamicLayer())
                layers[-1].lazy_initialization(k0, k0)
                layers[-1].keys, layers[-1].values = (
                    _stack_left_padded([p[layer][j] if p else None for p in pasts], past_width, k0) for j in (0, 1))
        mask = mask.to(self.device)
        logits, layers = self._forward(input_ids.to(self.device), mask, positions.to(self.device), layers)
        self._sample(logits, rows)
        # every row's tokens move to its first columns: its valid (mask 1) columns first, in order
        first = len(self.rows)
        self._reserve(first + len(rows), mask.shape[1], like=layers[0].keys)
        order = torch.argsort(1 - mask, dim=1, stable=True)[:, None, :, None]
        for (keys, values), layer in zip(self.kv, layers):
            index = order.expand(-1, keys.shape[1], -1, keys.shape[3])
            keys[first:first + len(rows), :, :mask.shape[1]] = layer.keys.gather(2, index)
            values[first:first + len(rows), :, :mask.shape[1]] = layer.values.gather(2, index)
        self.rows += rows

    def _reserve(self, rows: int, columns: int, like: torch.Tensor) -> None:
        """Grow the KV buffers (doubling, so copies are rare) to hold ``rows`` x ``columns``."""
        have_rows, have_columns = (self.kv[0][0].shape[0], self.kv[0][0].shape[2]) if self.kv else (0, 0)
        if rows <= have_rows and columns <= have_columns:
            return
        rows = max(rows, min(2 * have_rows, self.max_batch)) if rows > have_rows else have_rows
        columns = max(columns, 2 * have_columns) if columns > have_columns else have_columns
        grown = []
        for layer in range(self.model.config.num_hidden_layers):
            pair = tuple(like.new_zeros(rows, like.shape[1], columns, like.shape[3]) for _ in range(2))
            if self.kv:
                for old, new in zip(self.kv[layer], pair):
                    new[:have_rows, :, :have_columns] = old
            grown.append(pair)
        self.kv = grown

    def _decode(self) -> list[Completion]:
        """One token for every running row."""
        rows = self.rows
        lengths = [r.in_cache for r in rows]
        width = max(lengths) + 1
        self._reserve(len(rows), width, like=self.kv[0][0])
        columns = torch.tensor(lengths, device=self.device)
        mask = (torch.arange(width, device=self.device)[None, :] <= columns[:, None])[:, None, None, :]
        row_index = torch.arange(len(rows), device=self.device)
        layers = [_SlotLayer(keys, values, row_index, columns, width) for keys, values in self.kv]
        next_tokens = torch.tensor([[r.new[-1]] for r in rows], device=self.device)
        logits, _ = self._forward(next_tokens, mask, columns[:, None], layers)
        self._sample(logits, rows)
        return self._collect()

    def _collect(self) -> list[Completion]:
        """Take the rows whose last sampled token ends their call out of the batch; the last row
        moves into each freed row (one row copied, not the batch)."""
        done = []
        for i in reversed(range(len(self.rows))):
            row = self.rows[i]
            last = row.new[-1]
            at_limit = len(row.new) >= row.request.max_new_tokens or len(row.ids) + len(row.new) >= self.context_window
            if last in self.stop_ids or at_limit:
                done.append(self._finish(i, row, "stop" if last in self.stop_ids else "length"))
                moved = self.rows.pop()
                if moved is not row:
                    self.rows[i] = moved
                    n = moved.in_cache
                    for buffer in (b for pair in self.kv for b in pair):
                        buffer[i, :, :n] = buffer[len(self.rows), :, :n]
        return done[::-1]

    def _finish(self, i: int, row: _Row, reason: str) -> Completion:
        new = row.new[:-1] if row.new[-1] == self.tokenizer.eos_token_id else row.new
        if self.join == "prefix-cache" and reason == "stop" and row.new[-1] != self.tokenizer.eos_token_id:
            n = row.in_cache
            self.saved[row.request.key] = (row.ids + row.new[:-1],
                                           [(keys[i:i + 1, :, :n].clone(), values[i:i + 1, :, :n].clone())
                                            for keys, values in self.kv])
        return Completion(row.request.key, self.tokenizer.decode(new, skip_special_tokens=True), reason,
                          len(row.ids), row.cached, len(row.new), token_ids=tuple(row.new),
                          logprobs=tuple(row.logprobs))
