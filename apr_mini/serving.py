"""Serving: the spawn/join engine against OpenAI-compatible completion servers.

Paper section 4.3 runs APR client-side against SGLang. :class:`OpenAIBackend` is such a client for
any ``/v1/completions`` server (SGLang, vLLM, ``transformers serve``): async, many requests in
flight, timeouts, retries, and a clear error when nothing answers. :func:`launch_server` starts
``transformers serve`` (CPU) or ``python -m sglang.launch_server`` (CUDA) for a checkpoint and waits
until it answers. The server keeps prefix caches itself: SGLang's radix cache is the prefix-cache join
of :class:`apr_mini.backends.TransformersBackend`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Sequence

from . import trace_language as tl
from .config import UserFacingError
from .engine import BackendUnavailable, Completion, Request


class ServerUnreachable(UserFacingError, BackendUnavailable):
    pass


# Gateway statuses: the server (or a proxy before it) is down or overloaded, not refusing this request
UNAVAILABLE_STATUSES = (502, 503, 504)


def cut_at_spawn(text: str) -> str:
    """A call ends right after its first spawn block; drop whatever a server decoded after it."""
    end = text.find(tl.SPAWN_CLOSE)
    return text if end < 0 else text[:end + len(tl.SPAWN_CLOSE)]


def probe_body(model: str) -> dict:
    """The smallest completion request: is a server up and serving ``model``?"""
    return {"model": model, "prompt": "", "max_tokens": 1}


def checkpoint_context(checkpoint: str | Path) -> int:
    """The context window written in a local checkpoint's ``config.json``."""
    config = Path(checkpoint) / "config.json"
    if not config.exists():
        raise UserFacingError(f"{config} not found: pass the served model's context window "
                              "(context_window=..., or --context on the command line)")
    return int(json.loads(config.read_text())["max_position_embeddings"])


class OpenAIBackend:
    """An async client for ``POST {base_url}/v1/completions`` on one or several servers, run on its own
    event-loop thread, so it works the same from scripts and from Jupyter (whose loop is already running).

    Every request is one HTTP call; up to ``concurrency`` per server are in flight, which is what lets a
    server batch them. With several ``base_url`` s (several GPUs, each serving the model) a thread's first
    call goes to the server with the fewest calls in flight and its later calls to the same one, so its
    prefix stays in that server's cache (SGLang's radix cache; the join only prefills the new text).
    No ``stop`` string is sent: trace models end a spawn block with EOS, and ``transformers serve``'s
    stop-string matcher stops early on this tokenizer's multi-character tokens (measured: it cut
    ``Moving to Node #0,3`` after the ``#``), so the client cuts the text after the first
    ``<End Calling Sub Searches>`` itself. A failed call is retried ``retries`` times with backoff.
    After that, a transport failure (no connection, a timeout, a gateway status) raises
    :class:`ServerUnreachable`, which stops the run without recording the problems in flight; any
    other failure (the server refused this request) comes back as a ``reason="error"`` completion,
    which the engine records as the thread's failure. ``cached_tokens`` is what a server reports,
    when it does."""

    def __init__(self, base_url: str | list[str], model: str, *, context_window: int | None = None,
                 concurrency: int = 64, timeout: float = 120.0, retries: int = 2):
        import httpx

        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("OpenAIBackend needs at least one server url")
        self.base_urls, self.model = [u.rstrip("/") for u in urls], model
        self.context_window = context_window or checkpoint_context(model)
        self.retries, self.timeout = retries, timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="apr-mini-http")
        self._thread.start()
        self.clients = [self._call(self._make_client(httpx, url, concurrency)) for url in self.base_urls]
        self.in_flight: dict[concurrent.futures.Future, int] = {}   # call -> its server
        self.server_of: dict[Hashable, int] = {}          # thread key -> the server its calls go to
        self.load = [0] * len(self.base_urls)              # calls in flight per server

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    async def _make_client(self, httpx, url, concurrency):
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(base_url=url, timeout=self.timeout, limits=limits)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def check(self) -> None:
        """Raise :class:`ServerUnreachable` with what to do if a server does not answer."""
        for server, url in enumerate(self.base_urls):
            try:
                self._call(self._post(probe_body(self.model), server, retries=0))
            except Exception as err:  # any failure here means the same thing to the user
                raise ServerUnreachable(
                    f"no OpenAI-compatible completion server answered at {url}/v1/completions ({err}). "
                    "Start one, e.g. `transformers serve --device cpu --port 8000 data/cpu-apr` or "
                    "`python -m sglang.launch_server --model-path data/cpu-apr --port 8000`.") from err

    async def _post(self, body: dict, server: int = 0, retries: int | None = None) -> dict:
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                response = await self.clients[server].post("/v1/completions", json=body)
                response.raise_for_status()
                return response.json()
            except Exception:
                if attempt == retries:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)

    def _server_for(self, key: Hashable) -> int:
        if key not in self.server_of:
            self.server_of[key] = min(range(len(self.load)), key=self.load.__getitem__)
        return self.server_of[key]

    async def _complete(self, request: Request, server: int) -> Completion:
        import httpx

        body = {"model": self.model, "prompt": request.text, "max_tokens": request.max_new_tokens,
                "temperature": request.temperature, "seed": request.seed}
        try:
            reply = await self._post(body, server)
            choice, usage = reply["choices"][0], reply.get("usage") or {}
        except Exception as err:
            status = err.response.status_code if isinstance(err, httpx.HTTPStatusError) else None
            if isinstance(err, httpx.TransportError) or status in UNAVAILABLE_STATUSES:
                raise ServerUnreachable(f"the server at {self.base_urls[server]} stopped answering "
                                        f"({type(err).__name__}: {str(err)[:200]})") from err
            return Completion(request.key, "", "error", error=f"{type(err).__name__}: {err}"[:300])
        text = cut_at_spawn(choice.get("text") or "")
        details = usage.get("prompt_tokens_details") or {}
        new = usage.get("completion_tokens") or tl.count_tokens(text)
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(request.key, text, reason, usage.get("prompt_tokens") or tl.count_tokens(request.text) + 1,
                          details.get("cached_tokens") or 0, new)

    def step(self, requests: list[Request]) -> list[Completion]:
        for request in requests:
            server = self._server_for(request.key)
            self.load[server] += 1
            self.in_flight[asyncio.run_coroutine_threadsafe(self._complete(request, server), self.loop)] = server
        if not self.in_flight:
            return []
        done, _ = concurrent.futures.wait(self.in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            self.load[self.in_flight.pop(future)] -= 1
        try:
            return [future.result() for future in done]
        except BackendUnavailable:
            for future in self.in_flight:  # the run stops: drop the calls still out
                future.cancel()
            self.in_flight.clear()
            raise

    def release(self, key: Hashable) -> None:
        self.server_of.pop(key, None)

    def close(self) -> None:
        for client in self.clients:
            self._call(client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Server:
    """A model server started by :func:`launch_server`; use it as a context manager to stop it."""

    process: subprocess.Popen
    base_url: str
    checkpoint: str
    log: Path

    def backend(self, **options) -> OpenAIBackend:
        """A client for this server, for the engine (``options`` go to :class:`OpenAIBackend`)."""
        return OpenAIBackend(self.base_url, self.checkpoint, **options)

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
    server = Server(process, f"http://127.0.0.1:{port}", str(checkpoint), log)
    body = probe_body(server.checkpoint)
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
