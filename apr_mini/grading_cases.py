"""What each assignment's hidden tests ask: the cases, the submission's answer, the reference's answer.

One :class:`Part` per graded test cell of ``assignments/source/<id>/<id>.ipynb`` (its ``grade_id``).
A part draws its cases from a seeded ``random.Random`` with package code only, so the cases exist
before any student code runs; :func:`Part.student` calls the submission's functions on one case and
:func:`Part.expected` the package's, both returning plain JSON values (an error is the string
``"error: <Type>"``). ``forbidden`` names the package's own implementation of what the part asks the
student to write: :mod:`apr_mini.grading` ends the graded process if that code runs at all, however
it was reached. The grader (``apr_mini.grading``) holds the mechanism; this module only the questions.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TASK4 = dict(n_numbers=4, min_number=1, max_number=40, min_target=10, max_target=60)
REFERENCE_TRACES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "apr_reference_traces.json"


@dataclass(frozen=True)
class Part:
    assignment: str
    grade_id: str                                  # the graded test cell whose points this part gives
    forbidden: tuple[str, ...]                     # "module:qualname" of the package's implementation
    cases: Callable[[random.Random], list]
    student: Callable[[dict, Any], Any]            # (the submission's namespace, case) -> JSON value
    expected: Callable[[Any], Any]                 # case -> JSON value, from the package
    tolerance: float = 0.0                         # for floats: |a - b| <= tolerance * (1 + |b|)


def answer(fn: Callable, *args) -> Any:
    """``fn(*args)``, or the name of the exception it raised (a wrong type of error is a wrong answer)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - any failure of student code is an answer, not a crash
        return f"error: {'ValueError' if isinstance(err, ValueError) else type(err).__name__}"


def _reference_trees() -> list[dict]:
    return [case["trace_dict"] for case in json.loads(REFERENCE_TRACES.read_text())]


def _random_trees(rng: random.Random, n: int, *, stream: str, budgets: bool = False) -> list[dict]:
    from .config import TaskConfig
    from .countdown import problem_chunk
    from .demonstrations import apr_tree, condition_tree

    trees = []
    for _ in range(n):
        seed = rng.randrange(10**9)
        problem = problem_chunk(TaskConfig(**TASK4), seed, stream, 0, 1)[0]
        tree = apr_tree(problem, beam=rng.randint(1, 5), sub_beam=rng.randint(1, 6), max_depth=rng.randint(1, 2),
                        spawn_probability=rng.choice([0.5, 1.0]), rng=random.Random(seed))
        trees.append(condition_tree(tree, "tokens", token_budget_step=512) if budgets and rng.random() < 0.5 else tree)
    return trees


# -- a1: the strict verifier -------------------------------------------------------------------

def _steps(rng: random.Random, n: int) -> list:
    from .countdown import Step

    cases = []
    for _ in range(n):
        available = [rng.randint(0, 30) for _ in range(rng.randint(1, 5))]
        pick = lambda: rng.choice(available) if rng.random() < 0.5 else rng.randint(0, 40)  # noqa: E731
        a, b, op = pick(), pick(), rng.choice("+-*/")
        true = {"+": a + b, "*": a * b, "-": a - b, "/": a // b if b else 0}[op]
        cases.append((available, Step(a, op, b, true + rng.choice([0, 0, 0, 1, -1]))))
    return cases


def _legal_student(ns: dict, case) -> Any:
    available, step = case
    mine = list(available)
    got = answer(ns["legal_step"], mine, step)
    if isinstance(got, str):
        return got
    left = got[0] if isinstance(got, tuple) and got else "not a (numbers, reason) pair"
    return {"left": sorted(left) if isinstance(left, list) else left if left is None else repr(left),
            "input unchanged": mine == list(available)}


def _legal_expected(case) -> Any:
    from .countdown import apply_step

    left = list(case[0])
    return {"left": sorted(left) if apply_step(left, case[1]) is None else None, "input unchanged": True}


def _paths(rng: random.Random, n: int) -> list:
    from .countdown import Step, all_solutions

    cases = []
    while len(cases) < n:
        nums, target = [rng.randint(1, 20) for _ in range(rng.randint(2, 4))], rng.randint(1, 60)
        solutions = all_solutions(nums, target)
        if solutions and rng.random() < 0.5:
            steps = list(rng.choice(solutions))
            if rng.random() < 0.5:  # break it somewhere
                k = rng.randrange(len(steps))
                a, op, b, result = steps[k]
                steps[k] = rng.choice([Step(a, op, b, result + 1), Step(a, op, a, result), Step(b, op, b, result)])
            cases.append((nums, target, steps))
        else:
            cases.append((nums, target, [step for _, step in _steps(rng, rng.randint(1, 3))]))
    from . import trace_language as tl

    for case in json.loads(REFERENCE_TRACES.read_text()):
        if case["final_result"]:
            cases.append((case["nums"], case["target"], tl.result_steps(case["final_result"])[0]))
    return cases


def _replay_student(ns: dict, case) -> Any:
    got = answer(ns["replay"], list(case[0]), case[1], list(case[2]))
    return bool(got[0]) if isinstance(got, tuple) and got and isinstance(got[0], bool) else repr(got)[:80]


def _replay_expected(case) -> Any:
    from .countdown import verify_steps

    return bool(verify_steps(case[0], case[1], case[2]).ok)


A1 = ("apr_mini.countdown:apply_step", "apr_mini.countdown:verify_steps", "apr_mini.countdown:combine",
      "apr_mini.countdown:successors", "apr_mini.trace_language:verify_result", "apr_mini.trace_language:verify_trace")

# -- a2: the spawn/join protocol ---------------------------------------------------------------

def _spawning_texts(rng: random.Random) -> list:
    from . import trace_trees as tt

    threads = [t for tree in _reference_trees() + _random_trees(rng, 60, stream="a2", budgets=True)
               for t in tt.iter_threads(tree)]
    cases = [(t["main_calls"][k], t["sub_calls"][k]) for t in threads for k in range(len(t.get("sub_calls", [])))]
    text = cases[0][0]
    broken = [text.replace("Sub Search 1 at", "Sub Search 3 at"), text.replace("<End Calling", "<End Callin"),
              text.replace("Moving to Node #0,", "Moving to Node #9,"), "no spawn", text + "more text\n"]
    return cases + [(b, []) for b in broken]


def _prompts_student(ns: dict, case) -> Any:
    request = answer(ns["spawn_request"], case[0])
    return {"prompts": answer(ns["children_prompts"], case[0]),
            "request": list(request) if isinstance(request, tuple) else request}


def _prompts_expected(case) -> Any:
    from . import trace_language as tl

    request = answer(tl.parse_spawn, case[0])
    return {"prompts": answer(tl.child_prompts, case[0]),
            "request": [request.before, request.level, list(request.node_ids)] if not isinstance(request, str) else request}


def _results_of(children: list[dict]) -> list:
    from . import trace_language as tl

    return [None if c.get("failure") else tl.extract_result(c["main_calls"][-1]) for c in children]


def _join_student(ns: dict, case) -> Any:
    return answer(ns["join"], case[0], _results_of(case[1]))


def _join_expected(case) -> Any:
    from . import trace_language as tl

    return answer(tl.join_text, case[0], _results_of(case[1]))


A2 = ("apr_mini.trace_language:child_prompts", "apr_mini.trace_language:parse_spawn",
      "apr_mini.trace_language:join_text", "apr_mini.trace_language:node_prompt", "apr_mini.trace_language:is_spawn")

# -- a3: tree metrics --------------------------------------------------------------------------

def _trees(rng: random.Random) -> list:
    return _random_trees(rng, 150, stream="a3") + _reference_trees()


def _totals_student(ns: dict, tree) -> Any:
    return [answer(ns["new_tokens"], tree), answer(ns["total_tokens"], tree), answer(ns["longest_sequence"], tree)]


def _totals_expected(tree) -> Any:
    from . import trace_language as tl
    from . import trace_trees as tt

    stats = tt.tree_stats(tree)
    own = [tl.count_tokens(tree["main_calls"][0])] + [
        tl.count_tokens(tree["main_calls"][k][len(tl.parse_spawn(tree["main_calls"][k - 1]).before):])
        for k in range(1, len(tree["main_calls"]))]
    return [own, stats.total_tokens, stats.longest_sequence]


def _critical_student(ns: dict, tree) -> Any:
    return answer(ns["critical_path"], tree)


def _critical_expected(tree) -> Any:
    from . import trace_trees as tt

    return tt.tree_stats(tree).critical_path


A3 = ("apr_mini.trace_trees:tree_stats", "apr_mini.trace_trees:timeline",
      "apr_mini.trace_trees:thread_segments", "apr_mini.trace_trees:_prompt_of")

# -- a4: the orchestrator's join step ----------------------------------------------------------

def _engine_cases(limits: dict) -> Callable[[random.Random], list]:
    def cases(rng: random.Random) -> list:
        return [(rng.randrange(10**6), rng.randint(1, 2), {k: rng.choice(v) for k, v in limits.items()})
                for _ in range(12)]
    return cases


def _engine_run(orchestrator_class, case) -> list:
    from .config import TaskConfig
    from .countdown import problem_chunk
    from .demonstrations import apr_tree
    from .engine import Limits, ScriptedBackend, scripted_from_trees

    seed, depth, limits = case
    problems = problem_chunk(TaskConfig(**TASK4), seed, "a4-graded", 0, 4)
    trees = [apr_tree(p, beam=3, sub_beam=3, spawn_probability=1.0, max_depth=depth, rng=random.Random(seed + i))
             for i, p in enumerate(problems)]
    engine = orchestrator_class(ScriptedBackend(scripted_from_trees(trees)), Limits(max_depth=depth, **limits))
    records = sorted(engine.run(enumerate(problems)), key=lambda r: r["id"])

    def bare(tree):
        return {"main_calls": tree["main_calls"], "failure": tree["failure"],
                "sub_calls": [[bare(c) for c in kids] for kids in tree["sub_calls"]]}

    return [[bare(r["tree"]), r["verified"]] for r in records]


def _engine_student(ns: dict, case) -> Any:
    return answer(_engine_run, ns["MyOrchestrator"], case)


def _engine_expected(case) -> Any:
    from .engine import Orchestrator

    return _engine_run(Orchestrator, case)


# the package's join step; _join also runs inside the engine's own spawn step, so only child_ended is
# forbidden outright, and _join when the student's code calls it (see grading.CALLED_FROM_STUDENT)
A4 = ("apr_mini.engine:Orchestrator.child_ended",)
A4_CALLED = ("apr_mini.engine:Orchestrator._join",)

# -- a5: GRPO over a spawn tree ----------------------------------------------------------------

A5 = tuple(f"apr_mini.grpo:{name}" for name in
           ("group_advantages", "token_weights", "per_token_loss", "optimize", "backward_loss", "block_logps",
            "reference_logps", "grpo_step"))


def _rewards(rng: random.Random) -> list:
    cases = []
    for _ in range(200):
        size, groups = rng.randint(2, 8), rng.randint(1, 4)
        cases.append(([rng.choice([0.0, 1.0, 0.5, 0.25]) for _ in range(size * groups)], size,
                      rng.choice(["group", "none"])))
    return cases


def _floats(values) -> list:
    return [round(float(v), 9) for v in values]


def _advantages_student(ns: dict, case) -> Any:
    got = answer(ns["advantages"], list(case[0]), case[1], case[2])
    return got if isinstance(got, str) else _floats(got)


def _advantages_expected(case) -> Any:
    from .grpo import group_advantages

    return _floats(group_advantages(case[0], case[1], case[2])[0])


def _row_shapes(rng: random.Random) -> list:
    return [[(rng.randint(0, 5), rng.randint(1, 30), rng.randint(1, 40)) for _ in range(rng.randint(1, 12))]
            for _ in range(150)]


def _rows(shape) -> list:
    from .rollouts import Row

    return [Row(tree, "t", list(range(prompt + completion)), prompt) for tree, prompt, completion in shape]


def _weights_student(ns: dict, shape) -> Any:
    got = answer(ns["token_weight"], _rows(shape))
    return got if isinstance(got, str) else _floats(got)


def _weights_expected(shape) -> Any:
    from .grpo import token_weights

    return _floats(token_weights(_rows(shape)))


def _loss_cases(rng: random.Random) -> list:
    return [(rng.randint(1, 20), rng.uniform(-3, 3), rng.choice([0.1, 0.2, 0.3]), rng.choice([0.0, 0.04]),
             rng.randrange(10**6)) for _ in range(200)]


def _loss_tensors(case):
    import torch

    generator = torch.Generator().manual_seed(case[4])
    return [-torch.rand(case[0], generator=generator) * 3 for _ in range(3)]


def _loss_student(ns: dict, case) -> Any:
    lp, old, ref = _loss_tensors(case)
    got = answer(ns["clipped_loss"], lp, old, case[1], case[2], case[3], ref)
    return got if isinstance(got, str) else answer(lambda: _floats(got.detach().reshape(-1).tolist()))


def _loss_expected(case) -> Any:
    import torch

    from .grpo import per_token_loss

    lp, old, ref = _loss_tensors(case)
    return _floats(per_token_loss(lp, old, torch.full_like(lp, case[1]), epsilon=case[2], beta=case[3],
                                  ref_logps=ref)[0].tolist())


def _step_cases(rng: random.Random) -> list:
    """Two fixed batches like the setup cell's (2 problems x 3 demonstration trees, through the engine),
    each with its own rewards, learning rate and fresh model (loaded now: files close when sealed)."""
    from .config import TaskConfig
    from .countdown import problem_chunk
    from .demonstrations import apr_tree
    from .engine import Limits, Orchestrator, ScriptedBackend, scripted_from_trees
    from .rollouts import tree_rows
    from .models import load_model
    from .tokenizer import load_tokenizer

    checkpoint = Path(__file__).resolve().parent.parent / "data" / "tiny-apr"
    tokenizer = load_tokenizer(checkpoint)
    cases = []
    for _ in range(2):
        problems = problem_chunk(TaskConfig(**TASK4), rng.randrange(10**6), "a5-graded", 0, 2)
        trees = [apr_tree(p, beam=2, sub_beam=2, spawn_probability=1.0, rng=random.Random(i)) for p in problems
                 for i in range(3)]
        engine = Orchestrator(ScriptedBackend(scripted_from_trees(trees)), Limits(max_depth=1))
        records = sorted(engine.run(enumerate([p for p in problems for _ in range(3)])), key=lambda r: r["id"])
        rows = [row for i, r in enumerate(records) for row in tree_rows(r["tree"], tokenizer, i)]
        rewards = [float(rng.random() < 0.5) for _ in range(6)]
        cases.append((rewards, rng.choice([0.05, 0.1, 0.2]), load_model(checkpoint).train(), rows))
    return cases


def _fingerprint(model) -> list:
    """Each parameter tensor's sum and its dot with a fixed pattern: a step that differs shows here."""
    import torch

    out = []
    for p in model.parameters():
        flat = p.detach().reshape(-1).double()
        pattern = torch.sin(torch.arange(flat.numel(), dtype=torch.float64))
        out += [float(flat.sum()), float(flat @ pattern)]
    return out


def _step_student(ns: dict, case) -> Any:
    import torch

    _, lr, model, rows = case
    got = answer(ns["one_step"], model, torch.optim.SGD(model.parameters(), lr=lr), rows, list(case[0]), 3)
    return got if isinstance(got, str) else _fingerprint(model)


def _step_expected(case) -> Any:
    import torch

    from .config import GRPOConfig
    from .grpo import group_advantages, optimize
    from .packing import use_packed_attention

    _, lr, model, rows = case
    use_packed_attention(model)
    for row in rows:
        row.advantage = group_advantages(case[0], 3)[0][row.tree]
    optimize(model, torch.optim.SGD(model.parameters(), lr=lr), rows, GRPOConfig(beta=0.0, block_tokens=4096))
    return _fingerprint(model)


PARTS: dict[str, list[Part]] = {
    "a1_verifier": [Part("a1_verifier", "test_legal_step", A1, lambda rng: _steps(rng, 400), _legal_student, _legal_expected),
                    Part("a1_verifier", "test_replay", A1, lambda rng: _paths(rng, 400), _replay_student, _replay_expected)],
    "a2_spawn_join": [Part("a2_spawn_join", "test_prompts", A2, _spawning_texts, _prompts_student, _prompts_expected),
                      Part("a2_spawn_join", "test_join", A2, _spawning_texts, _join_student, _join_expected)],
    "a3_tree_metrics": [Part("a3_tree_metrics", "test_totals", A3, _trees, _totals_student, _totals_expected),
                        Part("a3_tree_metrics", "test_critical_path", A3, _trees, _critical_student, _critical_expected)],
    "a4_orchestrator": [
        Part("a4_orchestrator", "test_join_when_done", A4, _engine_cases({}), _engine_student, _engine_expected),
        Part("a4_orchestrator", "test_failed_children", A4, _engine_cases({"max_thread_tokens": [40, 80, 160]}),
             _engine_student, _engine_expected),
        Part("a4_orchestrator", "test_refused_calls", A4,
             _engine_cases({"max_children": [2, 3], "max_problem_tokens": [300, 600, None]}),
             _engine_student, _engine_expected)],
    "a5_grpo": [Part("a5_grpo", "test_advantages", A5, _rewards, _advantages_student, _advantages_expected, 1e-6),
                Part("a5_grpo", "test_token_weight", A5, _row_shapes, _weights_student, _weights_expected, 1e-9),
                Part("a5_grpo", "test_clipped_loss", A5, _loss_cases, _loss_student, _loss_expected, 1e-5),
                Part("a5_grpo", "test_one_step", A5, _step_cases, _step_student, _step_expected, 1e-4)],
}
CALLED_FROM_STUDENT = {"a4_orchestrator": A4_CALLED}


def find_part(assignment: str, grade_id: str) -> Part:
    return next(p for p in PARTS[assignment] if p.grade_id == grade_id)
