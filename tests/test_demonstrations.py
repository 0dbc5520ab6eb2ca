import random

import pytest

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt
from apr_mini.config import DemoConfig, TaskConfig
from apr_mini.countdown import Problem, problem_chunk
from apr_mini.demonstrations import apr_tree, condition_tree, demonstrate, sosp_trace

TASK = TaskConfig(n_numbers=4, min_number=1, max_number=30, min_target=10, max_target=50)
PROBLEMS = problem_chunk(TASK, 0, "test", 0, 60)


def check_tree(tree: dict, problem: Problem, level: int = 0) -> None:
    """Every spawn's children start from the prompts the parser builds, and every join is the
    parser's join of the children's results: generated traces obey the same protocol as the engine."""
    calls, subs = tree["main_calls"], tree["sub_calls"]
    assert len(calls) in (len(subs), len(subs) + 1)
    for k, children in enumerate(subs):
        assert tl.parse_spawn(calls[k]).level == level + 1
        prompts = tl.child_prompts(calls[k])
        assert [c["main_calls"][0].startswith(p + "\n") for c, p in zip(children, prompts)] == [True] * len(children)
        for child in children:
            check_tree(child, problem, level + 1)
        results = [tl.extract_result(c["main_calls"][-1]) for c in children]
        for prompt, result in zip(prompts, results):
            if result is not None:  # a child's result solves the child's own sub-problem
                node = tl.parse_prompt(prompt)
                assert tl.verify_result(result, node.nums, node.target)
        assert calls[k + 1].startswith(tl.join_text(calls[k], results))


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_apr_trees_parse_verify_and_follow_the_protocol(max_depth):
    rng = random.Random(max_depth)
    for problem in PROBLEMS:
        tree = apr_tree(problem, beam=rng.randint(1, 4), sub_beam=rng.randint(2, 6), max_depth=max_depth, rng=rng)
        check_tree(tree, problem)
        stats = tt.tree_stats(tree)
        assert stats.spawn_depth <= max_depth
        result = tl.extract_result(tree["main_calls"][-1])
        verdict = tl.verify_result(result, problem.nums, problem.target)
        assert bool(verdict) == (result is not None), verdict.reason  # the solver never lies
        assert len(tt.sft_rows(tree)) == len(list(tt.iter_sequences(tree)))


def test_nested_spawns_happen_when_allowed():
    rng = random.Random(0)
    depths = {tt.tree_stats(apr_tree(p, beam=2, sub_beam=2, max_depth=3, rng=rng)).spawn_depth for p in PROBLEMS}
    assert max(depths) >= 2
    flat = {tt.tree_stats(apr_tree(p, beam=2, sub_beam=2, max_depth=1, rng=rng)).spawn_depth for p in PROBLEMS}
    assert flat <= {0, 1}


def test_sosp_traces_start_with_the_root_prompt_and_verify():
    rng = random.Random(0)
    solved = 0
    for problem in PROBLEMS:
        trace = sosp_trace(problem, beam=rng.randint(1, 5), rng=rng)
        assert trace.startswith(tl.root_prompt(problem.target, problem.nums) + "\n")
        assert trace.endswith(("No solution found.\n", "Goal Reached\n")) or "Exit Sub Search" in trace[-40:]
        result = tl.extract_result(trace)
        verdict = tl.verify_result(result, problem.nums, problem.target)
        assert bool(verdict) == (result is not None), verdict.reason
        solved += bool(verdict)
    assert solved > len(PROBLEMS) // 3


def test_search_is_deterministic_given_the_rng():
    p = PROBLEMS[0]
    assert sosp_trace(p, beam=3, rng=random.Random(5)) == sosp_trace(p, beam=3, rng=random.Random(5))
    assert apr_tree(p, beam=3, sub_beam=5, rng=random.Random(5)) == apr_tree(p, beam=3, sub_beam=5, rng=random.Random(5))


def test_wide_sub_beam_solves_whenever_solvable_at_the_root():
    # A child with a beam wider than any branching factor searches its subtree exhaustively,
    # so APR with a spawn at the root finds a solution for every solvable problem.
    for problem in PROBLEMS[:20]:
        tree = apr_tree(problem, beam=100, sub_beam=100, spawn_probability=1.0, rng=random.Random(0))
        assert tl.verify_trace(tree["main_calls"][-1], problem.nums, problem.target)


def test_conditioning_prefixes():
    rng = random.Random(1)
    problem = PROBLEMS[1]
    tree = apr_tree(problem, beam=3, sub_beam=4, spawn_probability=1.0, rng=rng)
    n_children = tt.tree_stats(tree).n_threads - 1
    by_calls = condition_tree(tree, "sub_calls")
    assert all(t.startswith(f"Sub Call Budget: {n_children} Moving to Node #0\n") for t in by_calls["main_calls"])
    assert all(c["main_calls"][0].startswith("Moving to Node #") for c in by_calls["sub_calls"][0])
    by_tokens = condition_tree(tree, "tokens", token_budget_step=256)
    budget = int(by_tokens["main_calls"][0].split(" ")[2])
    assert budget % 256 == 0 and budget >= tt.tree_stats(tree).total_tokens
    assert all(t.startswith(f"Token Budget: {budget} ") for t in tt.iter_sequences(by_tokens))
    check_tree(by_tokens, problem)  # children's prompts carry the budget, as the parser builds them
    assert len(tt.sft_rows(by_calls)) == len(list(tt.iter_sequences(tree)))


def test_demonstrate_records_beams_and_verdicts():
    demo = DemoConfig(sosp_max_beam=3, apr_max_beam=4, apr_max_sub_beam=6)
    row = demonstrate(PROBLEMS[2], demo, random.Random(0))
    assert 1 <= row["sosp"]["beam"] <= 3 and 1 <= row["apr"]["beam"] <= row["apr"]["sub_beam"] <= 6
    assert row["apr"]["solved"] == bool(tl.verify_trace(row["apr"]["trace_dict"]["main_calls"][-1],
                                                        row["nums"], row["target"]))


def test_unknown_heuristic_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown heuristic"):
        sosp_trace(PROBLEMS[0], beam=2, heuristic="magic")


def test_timeline_places_children_in_parallel_and_explorer_lists_every_call():
    from apr_mini.explorer import tree_explorer

    rng = random.Random(2)
    for problem in PROBLEMS[:20]:
        tree = apr_tree(problem, beam=2, sub_beam=3, max_depth=2, rng=rng)
        segments = tt.timeline(tree)
        assert len(segments) == len(list(tt.iter_sequences(tree)))
        for segment in segments:
            if segment.thread != "root":
                parent = segment.thread.rsplit("/", 1)[0]
                spawn_index = int(segment.thread.rsplit("/", 1)[1].split(".")[0])
                spawner = next(s for s in segments if s.thread == parent and s.call == spawn_index)
                assert segment.start >= spawner.end  # a child starts after its parent's spawn
    widget = tree_explorer(tree, title="test")
    chooser = widget.children[1]
    assert len(chooser.options) == len(segments)
    chooser.value = len(segments) - 1
    assert "call" in widget.children[2].value
    for (label, _), segment in zip(chooser.options, segments):  # each thread's name and the node it explores
        assert f"{segment.thread} (node #{tl.parse_prompt(segment.text).node_id})" in label
