"""The in-process backend of the spawn/join engine: a thread's tokens from a Hugging Face model.

Paper section 4.3 runs APR's threads on SGLang, whose radix cache keeps a parent's prefix so that a
join only prefills the new text. :class:`TransformersBackend` implements the engine's
:class:`apr_mini.engine.Backend` interface in-process, on CPU or GPU, with a hand-written
continuous-batching decode loop: one KV cache for the whole batch; new threads are prefilled and
merged into it; finished rows leave it. Two join strategies, selectable and compared in notebook 04:

- ``"prefix-cache"`` keeps each thread's KV after a spawn and, when the joined text comes back,
  reuses the longest common token prefix, so only the join text is prefilled (what SGLang's radix
  cache does for APR);
- ``"re-prefill"`` prefills the whole joined text again (ThreadWeaver's engine-agnostic way).

Servers (SGLang, vLLM, ``transformers serve``) are reached through :mod:`apr_mini.serving`.
"""

from __future__ import annotations

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
    generator: torch.Generator | None = None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class _GrowingLayer(DynamicLayer):
    """A KV cache layer with spare room: appending a decoded token writes in place
    (``DynamicLayer.update`` concatenates, which copies the whole cache at every step)."""

    @classmethod
    def of(cls, parts: list[tuple[torch.Tensor, torch.Tensor]], spare: int = 64) -> "_GrowingLayer":
        """One layer for the rows of ``parts`` (``(keys, values)`` of a few rows each), stacked in
        order, left-padded to the widest and copied once into buffers with ``spare`` free columns."""
        width = max(k.shape[2] for k, _ in parts)
        rows = sum(k.shape[0] for k, _ in parts)
        keys = parts[0][0]
        layer = cls()
        layer.lazy_initialization(keys, keys)
        layer.buffers = [keys.new_empty(rows, keys.shape[1], width + spare, keys.shape[3]) for _ in range(2)]
        start = 0
        for part in parts:
            end = start + part[0].shape[0]
            for buffer, tensor in zip(layer.buffers, part):
                pad = width - tensor.shape[2]
                buffer[start:end, :, :pad] = 0  # masked out, but must be finite: 0 x NaN is NaN
                buffer[start:end, :, pad:width] = tensor
            start = end
        layer._expose(width)
        return layer

    def _expose(self, length: int) -> None:
        """Point ``keys``/``values`` (what attention reads) at the first ``length`` columns."""
        self.length = length
        self.keys, self.values = self.buffers[0][:, :, :length], self.buffers[1][:, :, :length]

    def keep_rows(self, index: torch.Tensor, first: int) -> None:
        """Keep the rows of ``index`` (one copy) and drop the first ``first`` columns (no copy)."""
        self.buffers = [b[index][:, :, first:] for b in self.buffers]
        self._expose(self.length - first)

    def update(self, key_states, value_states, *args, **kwargs):
        n, m = self.length, key_states.shape[2]
        if n + m > self.buffers[0].shape[2]:
            self.buffers = [torch.cat([b[:, :, :n], b.new_empty(*b.shape[:2], max(m, n), b.shape[3])], 2)
                            for b in self.buffers]
        self.buffers[0][:, :, n:n + m] = key_states
        self.buffers[1][:, :, n:n + m] = value_states
        self._expose(n + m)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class TransformersBackend:
    """Continuous batching over a Hugging Face causal LM (see the module docstring).

    Sampling is per row with the request's own seed, so a thread's text does not depend on which
    other threads share its batch (up to floating-point noise of batched matmuls)."""

    def __init__(self, model, tokenizer, *, join: str = "prefix-cache", max_batch: int = 64):
        if join not in ("prefix-cache", "re-prefill"):
            raise ValueError(f"join must be 'prefix-cache' or 're-prefill', not {join!r}")
        self.model, self.tokenizer, self.join, self.max_batch = model.eval(), tokenizer, join, max_batch
        self.device = next(model.parameters()).device
        self.context_window = int(model.config.max_position_embeddings)
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(tl.SPAWN_CLOSE)}
        self.waiting: list[Request] = []
        self.rows: list[_Row] = []
        self.layers: list = []   # the running batch's KV cache: per layer, [rows, heads, width, head_dim]
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.next_tokens = torch.zeros(0, dtype=torch.long, device=self.device)
        self.saved: dict[Hashable, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.forward_calls = 0

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
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.forward_calls += 1
        return out.logits[:, -1, :], cache.layers

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        tokens = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            if row.request.temperature > 0:
                noise = torch.rand(logits.shape[-1], generator=row.generator).clamp_(1e-12, 1.0)
                gumbel = -torch.log(-torch.log(noise)).to(logits.device)
                tokens[i] = int((logits[i].float() / row.request.temperature + gumbel).argmax())
        return tokens

    def _admit(self, requests: list[Request]) -> list[Completion]:
        """Prefill the requests (after any cached prefix) as one batch and merge them into the running one."""
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
                empty = k0.new_zeros(1, k0.shape[1], past_width, k0.shape[3])
                layers.append(_GrowingLayer.of([p[layer] if p else (empty, empty) for p in pasts], spare=new_width))
        logits, layers = self._forward(input_ids.to(self.device), mask.to(self.device), positions.to(self.device),
                                       layers)
        tokens = self._sample(logits, rows)
        self._merge(rows, [(layer.keys, layer.values) for layer in layers], mask.to(self.device), tokens)
        return self._collect()

    def _merge(self, rows: list[_Row], kv, mask: torch.Tensor, tokens: list[int]) -> None:
        width = max(self.mask.shape[1], mask.shape[1])
        if self.rows:
            self.layers = [_GrowingLayer.of([(a.keys, a.values), b]) for a, b in zip(self.layers, kv)]
            self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        else:
            self.layers = [_GrowingLayer.of([b]) for b in kv]
            self.mask = mask
        self.rows += rows
        self.next_tokens = torch.cat([self.next_tokens, torch.tensor(tokens, device=self.device)])
        for row, token in zip(rows, tokens):
            row.new.append(token)

    def _decode(self) -> list[Completion]:
        """One token for every running row."""
        rows = self.rows
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(rows), 1)], dim=1)
        positions = torch.tensor([[len(r.ids) + len(r.new) - 1] for r in rows], device=self.device)
        logits, _ = self._forward(self.next_tokens[:, None], self.mask, positions, self.layers)
        tokens = self._sample(logits, rows)
        for row, token in zip(rows, tokens):
            row.new.append(token)
        self.next_tokens = torch.tensor(tokens, device=self.device)
        return self._collect()

    def _collect(self) -> list[Completion]:
        """Take the rows whose last sampled token ends their call out of the batch."""
        done, keep = [], []
        for i, row in enumerate(self.rows):
            last = row.new[-1]
            at_limit = len(row.new) >= row.request.max_new_tokens or len(row.ids) + len(row.new) >= self.context_window
            if last in self.stop_ids or at_limit:
                done.append(self._finish(i, row, "stop" if last in self.stop_ids else "length"))
            else:
                keep.append(i)
        if done:
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.rows = [self.rows[i] for i in keep]
            self.mask, self.next_tokens = self.mask[index], self.next_tokens[index]
            first = int(self.mask.any(0).nonzero()[0]) if keep else 0  # drop columns that are padding in every row
            self.mask = self.mask[:, first:]
            for layer in self.layers:
                layer.keep_rows(index, first)
        return done

    def _finish(self, i: int, row: _Row, reason: str) -> Completion:
        new = row.new[:-1] if row.new[-1] == self.tokenizer.eos_token_id else row.new
        if self.join == "prefix-cache" and reason == "stop" and row.new[-1] != self.tokenizer.eos_token_id:
            fed = self.mask[i].bool()  # the KV of the prompt and every new token but the last one
            self.saved[row.request.key] = (row.ids + row.new[:-1], [(layer.keys[i:i + 1, :, fed],
                                                                     layer.values[i:i + 1, :, fed])
                                                                    for layer in self.layers])
        return Completion(row.request.key, self.tokenizer.decode(new, skip_special_tokens=True), reason,
                          len(row.ids), row.cached, len(row.new))
