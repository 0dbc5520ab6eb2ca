"""Backends for the spawn/join engine: where a thread's tokens come from.

Paper section 4.3 runs APR's threads on SGLang, whose radix cache keeps a parent's prefix so that a
join only prefills the new text. The same interface (:class:`apr_mini.engine.Backend`) has three
implementations here:

- :class:`TransformersBackend`: in-process, CPU or GPU. A hand-written continuous-batching decode
  loop over a Hugging Face model with one KV cache for the whole batch: new threads are prefilled and
  merged into the running batch, finished rows leave it. Two join strategies:
  ``"prefix-cache"`` keeps each thread's KV after its call and, when the joined text comes back,
  reuses the longest common token prefix, so only the join text is prefilled (what SGLang's radix
  cache does for APR); ``"re-prefill"`` prefills the whole joined text again (ThreadWeaver's
  engine-agnostic way).
- :class:`OpenAIBackend`: an async client for OpenAI-compatible ``/v1/completions`` servers (SGLang,
  vLLM, ``transformers serve``), with concurrency, timeouts, retries and a clear error when the
  server is down. It stops at ``<End Calling Sub Searches>`` with ``stop`` and puts the marker back.
- :func:`launch_server`: starts ``transformers serve`` (CPU) or ``python -m sglang.launch_server``
  (CUDA) for a checkpoint and waits until it answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Sequence

import torch

from . import trace_language as tl
from .config import UserFacingError
from .engine import Completion, Request


# ---------------------------------------------------------------------------------------------
# In-process transformers
# ---------------------------------------------------------------------------------------------

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
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []   # per layer, [rows, heads, width, head_dim]
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

    def _forward(self, input_ids, mask, positions, kv):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache()
        for keys, values in kv:  # hand the tensors over as they are (DynamicCache(ddp_cache_data=...) copies them)
            layer = DynamicLayer()
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            cache.layers.append(layer)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.forward_calls += 1
        return out.logits[:, -1, :], [(layer.keys, layer.values) for layer in cache.layers]

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
        kv = []
        if past_width:
            template = next(p for p in pasts if p is not None)
            for layer, (k0, _) in enumerate(template):
                empty = k0.new_zeros(1, k0.shape[1], past_width, k0.shape[3])
                kv.append(tuple(torch.cat([_left_pad(p[layer][j], past_width, 2) if p else empty for p in pasts])
                                for j in (0, 1)))
        logits, kv = self._forward(input_ids.to(self.device), mask.to(self.device), positions.to(self.device), kv)
        tokens = self._sample(logits, rows)
        self._merge(rows, kv, mask.to(self.device), tokens)
        return self._collect()

    def _merge(self, rows: list[_Row], kv, mask: torch.Tensor, tokens: list[int]) -> None:
        width = max(self.mask.shape[1], mask.shape[1])
        if self.rows:
            self.kv = [tuple(torch.cat([_left_pad(old[j], width, 2), _left_pad(new[j], width, 2)]) for j in (0, 1))
                       for old, new in zip(self.kv, kv)]
            self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        else:
            self.kv, self.mask = kv, mask
        self.rows += rows
        self.next_tokens = torch.cat([self.next_tokens, torch.tensor(tokens, device=self.device)])
        for row, token in zip(rows, tokens):
            row.new.append(token)

    def _decode(self) -> list[Completion]:
        """One token for every running row."""
        rows = self.rows
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(rows), 1)], dim=1)
        positions = torch.tensor([[len(r.ids) + len(r.new) - 1] for r in rows], device=self.device)
        logits, self.kv = self._forward(self.next_tokens[:, None], self.mask, positions, self.kv)
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
            self.kv = [(k[index], v[index]) for k, v in self.kv]
            self.mask, self.next_tokens = self.mask[index], self.next_tokens[index]
            if keep:
                first = int(self.mask.any(0).nonzero()[0])  # drop columns that are padding in every row
                self.kv = [(k[:, :, first:], v[:, :, first:]) for k, v in self.kv]
                self.mask = self.mask[:, first:]
        return done

    def _finish(self, i: int, row: _Row, reason: str) -> Completion:
        new = row.new[:-1] if row.new[-1] == self.tokenizer.eos_token_id else row.new
        if self.join == "prefix-cache" and reason == "stop" and row.new[-1] != self.tokenizer.eos_token_id:
            fed = self.mask[i].bool()  # the KV of the prompt and every new token but the last one
            self.saved[row.request.key] = (row.ids + row.new[:-1], [(k[i:i + 1, :, fed], v[i:i + 1, :, fed])
                                                                    for k, v in self.kv])
        return Completion(row.request.key, self.tokenizer.decode(new, skip_special_tokens=True), reason,
                          len(row.ids), row.cached, len(row.new))


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible servers
# ---------------------------------------------------------------------------------------------

class ServerUnreachable(UserFacingError, ConnectionError):
    pass


def _cut_at_spawn(text: str) -> str:
    """A call ends right after its first spawn block; drop whatever a server decoded after it."""
    end = text.find(tl.SPAWN_CLOSE)
    return text if end < 0 else text[:end + len(tl.SPAWN_CLOSE)]


def checkpoint_context(checkpoint: str | Path) -> int:
    """The context window written in a local checkpoint's ``config.json``."""
    return int(json.loads((Path(checkpoint) / "config.json").read_text())["max_position_embeddings"])


class OpenAIBackend:
    """An async client for ``POST {base_url}/v1/completions`` run on its own event-loop thread, so
    it works the same from scripts and from Jupyter (whose loop is already running).

    Every request is one HTTP call; up to ``concurrency`` are in flight, which is what lets the server
    batch them. No ``stop`` string is sent: trace models end a spawn block with EOS, and
    ``transformers serve``'s stop-string matcher stops early on this tokenizer's multi-character
    tokens (measured: it cut ``Moving to Node #0,3`` after the ``#``), so the client cuts the text
    after the first ``<End Calling Sub Searches>`` itself. A failed call is retried
    ``retries`` times with backoff; after that it comes back as a ``reason="error"`` completion, which
    the engine records as the thread's failure. The server keeps prefix caches itself (SGLang's radix
    cache), so ``cached_tokens`` is what it reports, when it does."""

    def __init__(self, base_url: str, model: str, *, context_window: int | None = None, concurrency: int = 64,
                 timeout: float = 120.0, retries: int = 2):
        import httpx

        self.base_url, self.model = base_url.rstrip("/"), model
        self.context_window = context_window or checkpoint_context(model)
        self.retries, self.timeout = retries, timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="apr-mini-http")
        self._thread.start()
        self.client = self._call(self._make_client(httpx, concurrency))
        self.in_flight: set[concurrent.futures.Future] = set()

    async def _make_client(self, httpx, concurrency):
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, limits=limits)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def check(self) -> None:
        """Raise :class:`ServerUnreachable` with what to do if the server does not answer."""
        try:
            self._call(self._post({"model": self.model, "prompt": "", "max_tokens": 1}, retries=0))
        except Exception as err:  # any failure here means the same thing to the user
            raise ServerUnreachable(
                f"no OpenAI-compatible completion server answered at {self.base_url}/v1/completions ({err}). "
                "Start one, e.g. `transformers serve --device cpu --port 8000 data/cpu-apr` or "
                "`python -m sglang.launch_server --model-path data/cpu-apr --port 8000`.") from err

    async def _post(self, body: dict, retries: int | None = None) -> dict:
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                response = await self.client.post("/v1/completions", json=body)
                response.raise_for_status()
                return response.json()
            except Exception:
                if attempt == retries:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)

    async def _complete(self, request: Request) -> Completion:
        body = {"model": self.model, "prompt": request.text, "max_tokens": request.max_new_tokens,
                "temperature": request.temperature, "seed": request.seed}
        try:
            reply = await self._post(body)
            choice, usage = reply["choices"][0], reply.get("usage") or {}
        except Exception as err:
            return Completion(request.key, "", "error", error=f"{type(err).__name__}: {err}"[:300])
        text = _cut_at_spawn(choice.get("text") or "")
        details = usage.get("prompt_tokens_details") or {}
        new = usage.get("completion_tokens") or tl.count_tokens(text)
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(request.key, text, reason, usage.get("prompt_tokens") or tl.count_tokens(request.text) + 1,
                          details.get("cached_tokens") or 0, new)

    def step(self, requests: list[Request]) -> list[Completion]:
        for request in requests:
            self.in_flight.add(asyncio.run_coroutine_threadsafe(self._complete(request), self.loop))
        if not self.in_flight:
            return []
        done, self.in_flight = concurrent.futures.wait(self.in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        return [future.result() for future in done]

    def release(self, key: Hashable) -> None:
        pass

    def close(self) -> None:
        self._call(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Server:
    """A model server started by :func:`launch_server`; use it as a context manager to stop it."""

    process: subprocess.Popen
    base_url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server_command(kind: str, checkpoint: str | Path, port: int) -> list[str]:
    if kind == "transformers":
        return [str(Path(sys.executable).with_name("transformers")), "serve", "--device", "cpu",
                "--host", "127.0.0.1", "--port", str(port), str(checkpoint)]
    if kind == "sglang":
        return [sys.executable, "-m", "sglang.launch_server", "--model-path", str(checkpoint),
                "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(f"server kind must be 'transformers' or 'sglang', not {kind!r}")


def launch_server(checkpoint: str | Path, *, kind: str = "transformers", port: int | None = None,
                  timeout: float = 300.0, log: str | Path | None = None, extra_args: Sequence[str] = ()) -> Server:
    """Start ``transformers serve`` (CPU) or SGLang (CUDA) for a checkpoint and wait until
    ``/v1/completions`` answers; raise with the server's log if it dies or times out. ``extra_args``
    go to the server's command line (e.g. ``["--attention-backend", "triton"]`` lets SGLang run the
    cpu models, whose head_dim of 32 its default kernels reject)."""
    import httpx

    port = port or random.randint(20000, 40000)
    log = Path(log or Path(os.environ.get("TMPDIR", "/tmp")) / f"apr-mini-{kind}-{port}.log")
    env = dict(os.environ)
    # `transformers serve` scans the hub cache for /v1/models; it must exist on a fresh machine
    Path(env.setdefault("HF_HUB_CACHE", str(Path.home() / ".cache" / "huggingface" / "hub"))).mkdir(parents=True,
                                                                                                   exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(server_command(kind, checkpoint, port) + list(extra_args), stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    body = {"model": str(checkpoint), "prompt": "", "max_tokens": 1}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {kind} server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=30).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    server.stop()
    raise TimeoutError(f"the {kind} server did not answer within {timeout:.0f} s:\n{log.read_text()[-2000:]}")
