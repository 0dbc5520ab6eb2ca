"""The spawn/join engine: run trace models whose threads fork child threads and join their results.

Paper section 3.2 (the inference side of APR): a thread decodes until it ends or writes a spawn
request; the engine starts one child thread per requested node, runs the children concurrently,
joins their results into the parent's text (:func:`apr_mini.trace_language.join_text`) and the parent
continues. The paper runs this client-side against SGLang; here the orchestrator is independent of
where tokens come from. A *backend* only continues texts: :class:`apr_mini.backends.TransformersBackend`
(in-process, CPU or GPU), :class:`apr_mini.serving.OpenAIBackend` (SGLang, vLLM, ``transformers
serve``), or the :class:`ScriptedBackend` below, which replays demonstrations.

- :meth:`Backend.step` takes new :class:`Request` s, makes progress on everything in flight, and
  returns the :class:`Completion` s that finished (at least one while anything is in flight). That is
  continuous batching: the ready threads of *all* problems share the backend's batch, and a child
  can start while other threads are still decoding.
- a thread's call stops at EOS or right after ``<End Calling Sub Searches>`` (the spawn), or at its
  token limit.

Limits make runaway output a recorded failure, never an exception: spawn depth, children per spawn,
threads per problem, new tokens per thread and the context window. A failed child reads as "No
Solution" to its parent, as a child that found nothing does. Deviation from the reference: it
supports one spawn level and crashes on malformed text; here depth is a limit and bad text is a
failure reason on the thread.

The result of one problem is its tree, ``{"main_calls": [...], "sub_calls": [[child, ...], ...]}``
as in the demonstrations (so :func:`~apr_mini.trace_trees.tree_stats` measures it), with each
thread's name, failure and per-call timing and token counts, plus the problem's metrics.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Iterator, Protocol

from . import trace_language as tl

from . import trace_trees as tt
from .countdown import Problem

# Failures of a thread that runs out of room; inference.smaller_contexts looks for CONTEXT_FULL
CONTEXT_FULL = "context window full"
THREAD_LIMIT = "thread token limit reached"
PROBLEM_LIMIT = "problem token budget spent"
PROBLEM_BUDGET_PER_CONTEXT = 16  # default per-problem budget: this many context windows of new tokens


class BackendUnavailable(ConnectionError):
    """The backend cannot be reached (a server gone, timeouts after retries): not the model's fault,
    so the problems in flight are not finished. Raised out of :meth:`Orchestrator.run`; a resumable
    run keeps what finished and does the rest when run again."""


@dataclass(frozen=True)
class Request:
    """Continue ``text`` (the thread's full text so far; the backend adds BOS) by at most
    ``max_new_tokens``. ``key`` names the thread, so a backend can keep its cached prefix."""

    key: Hashable
    text: str
    max_new_tokens: int
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    key: Hashable
    text: str                   # the new text only; a spawn's text ends with "<End Calling Sub Searches>"
    reason: str                 # "stop" (EOS or spawn), "length" (token limit) or "error"
    prompt_tokens: int = 0      # tokens of the request's text, BOS included
    cached_tokens: int = 0      # ... of which the backend did not have to prefill again
    new_tokens: int = 0
    error: str | None = None
    # the ids the backend sampled (the stop token included: EOS or the spawn's closing marker) and
    # each one's log-probability under the sampling distribution; empty where a backend has none
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()


class Backend(Protocol):
    context_window: int

    def step(self, requests: list[Request]) -> list[Completion]:
        """Admit ``requests``, decode, and return the completions that finished. A completion with
        ``reason="error"`` fails its thread; :class:`BackendUnavailable` stops the run."""

    def release(self, key: Hashable) -> None:
        """Forget whatever is cached for a thread that will not continue."""


@dataclass(frozen=True)
class Limits:
    """Guards against runaway output (paper: the reference spawns one level, at most ~10 children)."""

    max_depth: int = 2                  # spawn levels below the root; 0 forbids spawning
    max_children: int = 16              # per spawn
    max_threads: int = 64               # per problem, root included
    max_thread_tokens: int | None = None  # new tokens per thread over all its calls (None: no limit)
    max_problem_tokens: int | None = None  # new tokens over all threads of a problem (None: 16 contexts)
    context: int | None = None          # context window (None: the backend's)
    # run only the first N children a spawn names and join those (the paper's appendix fixes the width
    # to compare RL before and after); the spawn call is recorded as written. None: every child
    spawn_width: int | None = None

    def __post_init__(self):
        for name in ("max_children", "max_threads", "max_thread_tokens", "max_problem_tokens", "context",
                     "spawn_width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Limits.{name} must be at least 1 (or None), got {value}")
        if self.max_depth < 0:
            raise ValueError(f"Limits.max_depth must be 0 or more, got {self.max_depth}")


@dataclass(eq=False)
class Thread:
    problem: int
    name: str                            # "root", "root/0.2" (spawn 0, child 2), ...
    depth: int
    parent: "Thread | None"
    calls: list[str] = field(default_factory=list)       # full text of each main call
    children: list[list["Thread"]] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)      # per call: timing and token counts
    generated: int = 0
    asked: int = 0                       # the new tokens the current call may take
    waiting_for: int = 0
    failure: str | None = None
    result: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        return self.problem, self.name

    @property
    def root(self) -> "Thread":
        return self if self.parent is None else self.parent.root

    def problem_tokens(self) -> int:
        """New tokens written so far by every thread of this thread's problem."""
        def spent(thread: Thread) -> int:
            return thread.generated + sum(spent(kid) for kids in thread.children for kid in kids)
        return spent(self.root)

    def tree(self) -> dict:
        return {"main_calls": list(self.calls), "sub_calls": [[c.tree() for c in kids] for kids in self.children],
                "thread": self.name, "failure": self.failure, "calls": list(self.stats)}


def _first_children(parent_text: str, n: int) -> str:
    """The parent's text with the spawn that ends it cut to the first ``n`` children it names."""
    spawn = tl.parse_spawn(parent_text)
    if len(spawn.node_ids) <= n:
        return parent_text
    return spawn.before + tl.spawn_block(spawn.level, spawn.node_ids[:n])


def problem_metrics(tree: dict, verdict_ok: bool, latency: float) -> dict:
    """Accuracy, compute and latency numbers of one finished problem (paper section 5's axes)."""
    stats = tt.tree_stats(tree).to_dict()
    threads = list(tt.iter_threads(tree))
    calls = [call for thread in threads for call in thread.get("calls", [])]
    failures = [thread["failure"] for thread in threads if thread.get("failure")]
    prompt = sum(c["prompt_tokens"] for c in calls)
    cached = sum(c["cached_tokens"] for c in calls)
    return {"verified": verdict_ok, **stats, "latency_s": round(latency, 4), "prefill_tokens": prompt - cached,
            "cached_tokens": cached, "decode_tokens": sum(c["new_tokens"] for c in calls),
            "failures": failures}


class Orchestrator:
    """Run many problems through one backend, every ready thread of every problem in one batch."""

    def __init__(self, backend: Backend, limits: Limits = Limits(), *, temperature: float = 0.0, seed: int = 0,
                 prefix: str = "", keep_tokens: bool = False):
        self.backend, self.limits = backend, limits
        self.temperature, self.seed, self.prefix = temperature, seed, prefix
        self.keep_tokens = keep_tokens  # each call's sampled ids and log-probs in its stats (GRPO trains on them)
        self.context = limits.context or backend.context_window
        self.problem_budget = limits.max_problem_tokens or PROBLEM_BUDGET_PER_CONTEXT * self.context

    def run(self, problems: Iterable[tuple[int, Problem] | tuple[int, Problem, str]], *,
            max_live: int = 64) -> Iterator[dict]:
        """Yield one record per problem as soon as it finishes (not in input order):
        ``{"id", "nums", "target", "tree", "result", "verified", "reason", "metrics"}``.
        At most ``max_live`` problems are in flight at once; ids must be unique. A job
        ``(id, problem, prefix)`` carries its own condition prefix in place of the engine's."""
        if max_live < 1:  # checked here, not when the first record is asked for: 0 would admit nothing, forever
            raise ValueError(f"max_live must be at least 1, got {max_live}")
        return self._run(iter(problems), max_live)

    def _run(self, todo: Iterator[tuple], max_live: int) -> Iterator[dict]:
        live: dict[int, tuple[Problem, float, list[int]]] = {}  # id -> problem, start time, thread count
        running: dict[tuple[int, str], Thread] = {}
        queue: list[Request] = []
        ended_roots: list[Thread] = []
        exhausted = False

        while True:
            while not exhausted and len(live) < max_live:
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                pid, problem, *own = item
                if pid in live:
                    raise ValueError(f"problem id {pid} is already running")
                live[pid] = (problem, time.perf_counter(), [1])
                root = Thread(pid, "root", 0, None)
                prefix = own[0] if own else self.prefix
                if self._submit(root, tl.root_prompt(problem.target, problem.nums, prefix), queue, running):
                    ended_roots.append(root)
            for root in ended_roots:
                problem, start, _ = live.pop(root.problem)
                yield self._record(root, problem, time.perf_counter() - start)
            ended_roots.clear()
            if not running:
                if exhausted and not live:
                    return
                if live:
                    raise RuntimeError(f"problems {sorted(live)} have no running thread")
                continue
            batch, queue[:] = list(queue), []
            for completion in self.backend.step(batch):
                thread = running.pop(completion.key, None)
                if thread is None:
                    continue
                self._absorb(thread, completion)
                ended = self._after_call(thread, live[thread.problem][2], queue, running)
                while ended is not None and ended.parent is not None:  # a child ended: maybe its parent too
                    ended = self.child_ended(ended, queue, running)
                if ended is not None:
                    ended_roots.append(ended)

    # -- one thread -----------------------------------------------------------------------------

    def _submit(self, thread: Thread, text: str, queue: list[Request], running: dict) -> Thread | None:
        """Queue the thread's next call from ``text``; if a limit forbids it, end the thread."""
        thread.calls.append(text)
        context_room = self.context - (tl.count_tokens(text) + 1)  # + BOS
        thread_limit = self.limits.max_thread_tokens
        thread_room = context_room if thread_limit is None else thread_limit - thread.generated
        problem_room = self.problem_budget - thread.problem_tokens()
        room = min(context_room, thread_room, problem_room)
        if room <= 0:
            reason = CONTEXT_FULL if context_room <= 0 else THREAD_LIMIT if thread_room <= 0 else PROBLEM_LIMIT
            return self._fail(thread, reason)
        thread.asked = room
        thread.stats.append({"submitted": time.perf_counter()})
        running[thread.key] = thread
        queue.append(Request(thread.key, text, room, self.temperature,
                             zlib.crc32(f"{self.seed}:{thread.problem}:{thread.name}:{len(thread.calls)}".encode())))
        return None

    def _absorb(self, thread: Thread, completion: Completion) -> None:
        if completion.new_tokens > thread.asked:  # a backend that ignores max_new_tokens: keep what was asked
            pieces = tl.split_tokens(completion.text)[:thread.asked]
            completion = Completion(completion.key, "".join(pieces), "error", completion.prompt_tokens,
                                    completion.cached_tokens, len(pieces),
                                    f"backend wrote {completion.new_tokens} tokens, {thread.asked} asked")
        thread.calls[-1] += completion.text
        thread.generated += completion.new_tokens
        call = thread.stats[-1]
        call.update(seconds=round(time.perf_counter() - call.pop("submitted"), 6), reason=completion.reason,
                    prompt_tokens=completion.prompt_tokens, cached_tokens=completion.cached_tokens,
                    new_tokens=completion.new_tokens)
        if self.keep_tokens and completion.token_ids:
            call.update(token_ids=list(completion.token_ids), logprobs=list(completion.logprobs))
        if completion.reason == "error":
            thread.failure = f"backend error: {completion.error}"
        elif completion.reason == "length":
            full = completion.prompt_tokens + completion.new_tokens >= self.context
            spent = thread.problem_tokens() >= self.problem_budget
            thread.failure = CONTEXT_FULL if full else PROBLEM_LIMIT if spent else THREAD_LIMIT

    def _after_call(self, thread: Thread, count: list[int], queue: list[Request], running: dict) -> Thread | None:
        """Spawn children if the call ended in a spawn; return the thread if it has ended."""
        text = thread.calls[-1]
        if thread.failure is not None:
            return self._fail(thread, thread.failure)
        if not tl.is_spawn(text):
            thread.result = tl.extract_result(text)
            self.backend.release(thread.key)
            return thread
        if thread.depth >= self.limits.max_depth:
            allowed = "no thread may spawn" if not self.limits.max_depth else \
                f"only threads above depth {self.limits.max_depth} may spawn"
            return self._fail(thread, f"spawn at depth {thread.depth} refused (max_depth={self.limits.max_depth}: "
                                      f"{allowed})")
        try:
            prompts = tl.child_prompts(text)
        except tl.TraceFormatError as err:
            return self._fail(thread, f"malformed spawn: {err}")
        prompts = prompts[:self.limits.spawn_width]
        if len(prompts) > self.limits.max_children:
            return self._fail(thread, f"{len(prompts)} children, limit {self.limits.max_children}")
        if count[0] + len(prompts) > self.limits.max_threads:
            return self._fail(thread, f"more than {self.limits.max_threads} threads in the problem")
        count[0] += len(prompts)
        spawn = len(thread.children)
        kids = [Thread(thread.problem, f"{thread.name}/{spawn}.{i}", thread.depth + 1, thread)
                for i in range(len(prompts))]
        thread.children.append(kids)
        thread.waiting_for = len(kids)
        ended = []
        for kid, prompt in zip(kids, prompts):
            if self._submit(kid, prompt, queue, running) is not None:
                ended.append(kid)
        thread.waiting_for -= len(ended)
        return self._join(thread, queue, running) if thread.waiting_for == 0 else None

    def child_ended(self, child: Thread, queue: list[Request], running: dict) -> Thread | None:
        """A child thread has ended (solved, found nothing, or failed): count it off its parent. When
        it was the last of its spawn still running, join the children's results into the parent's text
        (a failed child reads as "No Solution") and queue the parent's next call. Returns the parent if
        that ended it too (a limit refused the call), so that its own parent hears of it; else None."""
        parent = child.parent
        parent.waiting_for -= 1
        return self._join(parent, queue, running) if parent.waiting_for == 0 else None

    def _join(self, thread: Thread, queue: list[Request], running: dict) -> Thread | None:
        results = [kid.result if kid.failure is None else None for kid in thread.children[-1]]
        return self._submit(thread, tl.join_text(_first_children(thread.calls[-1], len(results)), results),
                            queue, running)

    def _fail(self, thread: Thread, reason: str) -> Thread:
        thread.failure = reason
        self.backend.release(thread.key)
        return thread

    def _record(self, root: Thread, problem: Problem, latency: float) -> dict:
        tree = root.tree()
        result = root.result if root.failure is None else None
        verdict = tl.verify_result(result, problem.nums, problem.target)
        return {"id": root.problem, "nums": list(problem.nums), "target": problem.target, "tree": tree,
                "result": result, "verified": verdict.ok, "reason": verdict.reason,
                "metrics": problem_metrics(tree, verdict.ok, latency)}


def run_problems(backend: Backend, problems: list[Problem], *, limits: Limits = Limits(), temperature: float = 0.0,
                 seed: int = 0, prefix: str = "", max_live: int = 64) -> list[dict]:
    """Run ``problems`` and return their records in input order."""
    engine = Orchestrator(backend, limits, temperature=temperature, seed=seed, prefix=prefix)
    records = {r["id"]: r for r in engine.run(enumerate(problems), max_live=max_live)}
    return [records[i] for i in range(len(problems))]


class ScriptedBackend:
    """A policy that replays known continuations: ``script[given] = generated`` for every main call
    (see :func:`scripted_from_trees`). It models a continuous batch in token time: a request admitted
    at clock t finishes at t + its new tokens, and each :meth:`step` advances to the next finish.
    Unknown texts come back as backend errors."""

    def __init__(self, script: dict[str, str], *, context_window: int = 1 << 20,
                 count: Callable[[str], int] = tl.count_tokens):
        self.script, self.context_window, self.count = script, context_window, count
        self.clock = 0
        self.pending: list[tuple[int, int, Completion]] = []  # (finish time, order, completion)
        self.released: list[Hashable] = []
        self.batch_sizes: list[int] = []

    def step(self, requests: list[Request]) -> list[Completion]:
        for request in requests:
            self.pending.append(self._complete(request))
        if not self.pending:
            return []
        self.batch_sizes.append(len(self.pending))
        self.clock = min(p[0] for p in self.pending)
        done = [p for p in self.pending if p[0] == self.clock]
        self.pending = [p for p in self.pending if p[0] != self.clock]
        return [c for _, _, c in sorted(done, key=lambda p: p[1])]

    def _complete(self, request: Request) -> tuple[int, int, Completion]:
        prompt_tokens = self.count(request.text) + 1
        generated = self.script.get(request.text)
        if generated is None:
            completion = Completion(request.key, "", "error", prompt_tokens, error="no scripted continuation")
            return self.clock, len(self.pending), completion
        new = self.count(generated)
        reason = "stop"
        if new > request.max_new_tokens:
            generated = "".join(tl.split_tokens(generated)[:request.max_new_tokens])
            new, reason = request.max_new_tokens, "length"
        completion = Completion(request.key, generated, reason, prompt_tokens, 0, new)
        return self.clock + new, len(self.pending), completion

    def release(self, key: Hashable) -> None:
        self.released.append(key)


def scripted_from_trees(trees: Iterable[dict]) -> dict[str, str]:
    """``{given: generated}`` for every main call of every thread of the trees."""
    return {given: generated for tree in trees for thread in tt.iter_threads(tree)
            for given, generated in tt.thread_segments(thread)}
