"""The spawn/join orchestrator against a scripted policy that replays solver demonstrations:
exact trees, nested spawns, continuous batching, limits and malformed output."""

import random

import pytest

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt
from apr_mini.config import TaskConfig
from apr_mini.countdown import Problem, problem_chunk
from apr_mini.demonstrations import apr_tree, condition_tree
from apr_mini.engine import (PROBLEM_LIMIT, Limits, Orchestrator, Request, ScriptedBackend, run_problems,
                             scripted_from_trees)

TASK = TaskConfig(n_numbers=4, min_number=1, max_number=40, min_target=10, max_target=60)


def bare(tree: dict) -> dict:
    """The demonstration format: what the engine adds (names, timing) removed."""
    return {"main_calls": tree["main_calls"], "sub_calls": [[bare(c) for c in kids] for kids in tree["sub_calls"]]}


def nested_trees(n: int = 12, max_depth: int = 2):
    problems = problem_chunk(TASK, 3, "engine", 0, n)
    trees = [apr_tree(p, beam=3, sub_beam=4, spawn_probability=1.0, max_depth=max_depth, rng=random.Random(i))
             for i, p in enumerate(problems)]
    return problems, trees


def depth(tree: dict) -> int:
    return max([1 + depth(c) for kids in tree["sub_calls"] for c in kids], default=0)


def test_replaying_demonstrations_gives_their_exact_trees_and_metrics():
    problems, trees = nested_trees()
    assert max(depth(t) for t in trees) == 2, "the fixture should have nested spawns"
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=Limits(max_depth=2))
    for record, tree, problem in zip(records, trees, problems):
        assert bare(record["tree"]) == tree
        assert record["result"] == tl.extract_result(tree["main_calls"][-1])
        assert record["verified"] == bool(tl.verify_result(record["result"], problem.nums, problem.target))
        stats = tt.tree_stats(tree).to_dict()
        assert {k: record["metrics"][k] for k in stats} == stats
        assert record["metrics"]["failures"] == []
        generated = sum(map(tl.count_tokens, scripted_from_trees([tree]).values()))
        assert record["metrics"]["decode_tokens"] == generated
    assert any(r["verified"] for r in records)


def test_reference_trees_replay_exactly(reference_cases):
    trees = [c["trace_dict"] for c in reference_cases]
    problems = [Problem(tuple(c["nums"]), c["target"]) for c in reference_cases]
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=Limits(max_depth=1))
    assert [bare(r["tree"]) for r in records] == trees
    assert [r["verified"] for r in records] == [c["solved"] for c in reference_cases]


def test_threads_of_all_problems_share_the_batch():
    problems, trees = nested_trees(8)
    backend = ScriptedBackend(scripted_from_trees(trees))
    run_problems(backend, problems, limits=Limits(max_depth=2))
    assert backend.batch_sizes[0] == 8                 # every root at once
    assert max(backend.batch_sizes) > 8                # children of several problems run together
    assert len(backend.released) >= sum(1 for t in trees for _ in tt.iter_sequences(t)) // 2
    backend = ScriptedBackend(scripted_from_trees(trees))
    run_problems(backend, problems, limits=Limits(max_depth=2), max_live=1)
    assert backend.batch_sizes[0] == 1


def test_depth_limit_turns_a_grandchild_spawn_into_a_recorded_failure():
    problems, trees = nested_trees()
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=Limits(max_depth=1))
    deep = [r for r, t in zip(records, trees) if depth(t) == 2]
    assert deep
    for record in deep:
        assert any(f.startswith("spawn at depth 1") for f in record["metrics"]["failures"])
        assert record["metrics"]["spawn_depth"] <= 1
    sequential = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=Limits(max_depth=0))
    assert all(r["metrics"]["n_threads"] == 1 and not r["verified"] for r in sequential)
    assert all(r["tree"]["failure"].startswith("spawn at depth 0") for r in sequential)


@pytest.mark.parametrize("limits, reason", [
    (Limits(max_children=1), "children, limit 1"),
    (Limits(max_threads=2), "more than 2 threads"),
    (Limits(max_thread_tokens=40), "thread token limit reached"),
    (Limits(context=60), "context window full"),
])
def test_limits_end_threads_as_failures_not_exceptions(limits, reason):
    problems, trees = nested_trees(6, max_depth=1)
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=limits)
    assert len(records) == 6
    assert all(any(reason in f for f in r["metrics"]["failures"]) for r in records)
    assert not any(r["verified"] for r in records)


def test_a_spawn_width_runs_the_first_children_and_joins_only_those():
    problems, trees = nested_trees(6, max_depth=1)
    asked = []

    class Recording(ScriptedBackend):
        def step(self, requests):
            asked.extend(r.text for r in requests)
            return super().step(requests)

    records = run_problems(Recording(scripted_from_trees(trees)), problems, limits=Limits(max_depth=1, spawn_width=2))
    for record, tree in zip(records, trees):
        spawned = tl.parse_spawn(tree["main_calls"][0]).node_ids
        assert len(spawned) > 2, "the fixture should spawn more children than the width"
        assert record["tree"]["main_calls"][0] == tree["main_calls"][0]  # the spawn as the model wrote it
        assert [bare(c) for c in record["tree"]["sub_calls"][0]] == tree["sub_calls"][0][:2]
        joined = next(t for t in asked if t.startswith(tl.parse_spawn(tree["main_calls"][0]).before + tl.JOIN_OPEN))
        assert [line.rsplit("#", 1)[1].rstrip(">") for line in joined.splitlines() if "Sub Search" in line
                and "at Node #" in line] == list(spawned[:2])
    with pytest.raises(ValueError, match="spawn_width"):
        Limits(spawn_width=0)


def test_settings_without_a_width_keep_the_records_written_before_it():
    from apr_mini.inference import EvalSettings

    assert "spawn_width" not in EvalSettings().to_dict()["limits"]  # older settings files still match
    assert EvalSettings(limits=Limits(spawn_width=3)).to_dict()["limits"]["spawn_width"] == 3


def test_malformed_output_and_backend_errors_are_recorded_per_thread():
    problems, trees = nested_trees(4, max_depth=1)
    script = scripted_from_trees(trees)
    root_prompts = [tl.root_prompt(p.target, p.nums) for p in problems]
    script[root_prompts[0]] = ("Exploring Operation: 1+1=2, Resulting Numbers: [2]\n" + tl.SPAWN_OPEN + "\n"
                               "<Start Sub Search 0 at level 1> Moving to Node #0,7\n" + tl.SPAWN_CLOSE)
    script[root_prompts[1]] = tl.SPAWN_OPEN + "\n<Start Sub Search 3 at level 1> oops\n" + tl.SPAWN_CLOSE
    del script[root_prompts[2]]
    records = run_problems(ScriptedBackend(script), problems, limits=Limits(max_depth=1))
    assert "never generated" in records[0]["tree"]["failure"]
    assert records[1]["tree"]["failure"].startswith("malformed spawn")
    assert records[2]["tree"]["failure"] == "backend error: no scripted continuation"
    assert bare(records[3]["tree"]) == trees[3]


def test_a_failed_child_reads_as_no_solution_to_its_parent():
    problems, trees = nested_trees(6, max_depth=1)
    script = scripted_from_trees(trees)
    tree = next(t for t in trees if t["sub_calls"])
    child_prompt = tt.thread_segments(tree["sub_calls"][0][0])[0][0]
    script[child_prompt] = "Exploring Operation: 99*99=9801, Resulting"   # cut off: no result
    problem = problems[trees.index(tree)]
    [record] = run_problems(ScriptedBackend(script, context_window=10_000), [problem], limits=Limits(max_depth=1))
    joined = record["tree"]["main_calls"][1]
    assert "<No Solution in Sub Search 0 at level 1" in joined


def test_budget_prefix_reaches_root_and_children():
    problems = problem_chunk(TASK, 5, "budget", 0, 4)
    trees = [condition_tree(apr_tree(p, beam=3, sub_beam=4, spawn_probability=1.0, rng=random.Random(i)),
                            "tokens", token_budget_step=4096) for i, p in enumerate(problems)]
    prefix = tl.condition_prefix("tokens", 4096)
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, prefix=prefix)
    assert [bare(r["tree"]) for r in records] == trees
    spawned = [r for r in records if r["tree"]["sub_calls"]]
    assert spawned and all(c["main_calls"][0].startswith(prefix) for r in spawned for c in r["tree"]["sub_calls"][0])


def test_a_job_can_carry_its_own_prefix():
    """GRPO of a budget model conditions each problem on its own budget within one batch."""
    problems = problem_chunk(TASK, 5, "budget", 0, 4)
    plain = [apr_tree(p, beam=3, sub_beam=4, spawn_probability=1.0, rng=random.Random(i)) for i, p in enumerate(problems)]
    conditioned = [condition_tree(t, "tokens", token_budget_step=4096) for t in plain]
    prefix = tl.condition_prefix("tokens", 4096)
    engine = Orchestrator(ScriptedBackend(scripted_from_trees(plain + conditioned)))
    jobs = [(i, p, prefix if i % 2 else "") for i, p in enumerate(problems)]
    records = sorted(engine.run(jobs), key=lambda r: r["id"])
    assert [bare(r["tree"]) for r in records] == [conditioned[i] if i % 2 else plain[i] for i in range(len(problems))]


def test_a_non_ascii_number_in_model_output_is_a_recorded_result_not_a_crash():
    problems, trees = nested_trees(4, max_depth=1)
    script = scripted_from_trees(trees)
    solved = next(i for i, t in enumerate(trees) if tl.verify_trace(t["main_calls"][-1], problems[i].nums, problems[i].target))
    last_given, last_generated = tt.thread_segments(trees[solved])[-1]
    script[last_given] = last_generated.replace("Resulting Numbers: [", "Resulting Numbers: [²", 1)
    records = run_problems(ScriptedBackend(script), problems, limits=Limits(max_depth=1))
    assert len(records) == 4 and not records[solved]["verified"]
    assert "not a number" in records[solved]["reason"] or "no operations" in records[solved]["reason"]


def test_a_problem_token_budget_bounds_all_threads_together():
    problems, trees = nested_trees(4, max_depth=1)
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems,
                           limits=Limits(max_depth=1, max_problem_tokens=150))
    for record in records:
        assert record["metrics"]["decode_tokens"] <= 150
        assert PROBLEM_LIMIT in record["metrics"]["failures"]
    huge = Orchestrator(ScriptedBackend({}, context_window=1 << 20))
    assert huge.problem_budget == 16 << 20  # default: 16 context windows
    with pytest.raises(ValueError, match="max_problem_tokens"):
        Limits(max_problem_tokens=0)
    with pytest.raises(ValueError, match="context"):
        Limits(context=0)
    with pytest.raises(ValueError, match="max_live must be at least 1"):  # would admit nothing, forever
        huge.run(enumerate(problems), max_live=0)


class Overrunning(ScriptedBackend):
    """A backend that ignores max_new_tokens (a misbehaving server)."""

    def step(self, requests):
        return super().step([Request(r.key, r.text, 1 << 30, r.temperature, r.seed) for r in requests])


def test_a_completion_longer_than_asked_is_cut_and_recorded():
    problems, trees = nested_trees(3, max_depth=1)
    records = run_problems(Overrunning(scripted_from_trees(trees)), problems,
                           limits=Limits(max_depth=1, max_thread_tokens=40))
    for record in records:
        root = record["tree"]
        assert root["failure"].startswith("backend error: backend wrote") and "40 asked" in root["failure"]
        assert tl.count_tokens(root["main_calls"][0]) - tl.count_tokens(tt.thread_segments(root)[0][0]) == 40
