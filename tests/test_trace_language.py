import pytest

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt
from apr_mini.countdown import Step

PARENT = """Moving to Node #0
Current State: 30:[94, 18, 89, 12], Operations: []
Exploring Operation: 94-89=5, Resulting Numbers: [18, 12, 5]
Generated Node #0,0: 30:[18, 12, 5] Operation: 94-89=5
Exploring Operation: 94-18=76, Resulting Numbers: [89, 12, 76]
Generated Node #0,1: 30:[89, 12, 76] Operation: 94-18=76
<Calling Sub Searches>
<Start Sub Search 0 at level 1> Moving to Node #0,0
<Start Sub Search 1 at level 1> Moving to Node #0,1
<End Calling Sub Searches>"""

CHILD_0 = """Moving to Node #0,0
Current State: 30:[18, 12, 5], Operations: ['94-89=5']
Exploring Operation: 18+12=30, Resulting Numbers: [5, 30]
Generated Node #0,0,0: 30:[5, 30] Operation: 18+12=30
Moving to Node #0,0,0
Current State: 30:[5, 30], Operations: ['94-89=5', '18+12=30']
Exploring Operation: 30-5=25, Resulting Numbers: [25]
25,30 unequal: No Solution
No solution found."""


def test_prompts_and_state_lines():
    assert tl.root_prompt(30, [94, 18, 89, 12]) == "Moving to Node #0\nCurrent State: 30:[94, 18, 89, 12], Operations: []"
    assert tl.root_prompt(30, [1, 2, 3], tl.condition_prefix("sub_calls", 10)).startswith(
        "Sub Call Budget: 10 Moving to Node #0\n")
    target, nums, ops = tl.parse_state_line("Current State: 30:[5, 30], Operations: ['94-89=5', '18+12=30']")
    assert (target, nums) == (30, (5, 30))
    assert ops == (Step(94, "-", 89, 5), Step(18, "+", 12, 30))
    assert tl.parse_prompt(tl.node_prompt("0,3", 30, [5], ["1+4=5"])).ops == (Step(1, "+", 4, 5),)


def test_spawn_children_and_join():
    assert tl.is_spawn(PARENT) and tl.is_spawn(PARENT + "\n") and not tl.is_spawn(CHILD_0)
    spawn = tl.parse_spawn(PARENT)
    assert spawn.level == 1 and spawn.node_ids == ("0,0", "0,1")
    assert tl.child_prompts(PARENT) == [
        "Moving to Node #0,0\nCurrent State: 30:[18, 12, 5], Operations: ['94-89=5']",
        "Moving to Node #0,1\nCurrent State: 30:[89, 12, 76], Operations: ['94-18=76']",
    ]
    joined = tl.join_text(PARENT, [None, "Moving to Node #0,1\n...30,30 equal: Goal Reached"])
    assert joined.endswith("<Sub Searches>\n<No Solution in Sub Search 0 at level 1 at Node #0,0>\n"
                           "<Goal Reached in Sub Search 1 at level 1 at Node #0,1>\n"
                           "Moving to Node #0,1\n...30,30 equal: Goal Reached\n<End Sub Searches>\n")
    assert joined.startswith(spawn.before) and "<Calling Sub Searches>" not in joined
    with pytest.raises(ValueError):
        tl.join_text(PARENT, [None])


def test_token_budget_passes_to_children_but_sub_call_budget_does_not():
    token = "Token Budget: 1024 " + PARENT
    assert all(p.startswith("Token Budget: 1024 Moving to Node #") for p in tl.child_prompts(token))
    calls = "Sub Call Budget: 4 " + PARENT
    assert all(p.startswith("Moving to Node #") for p in tl.child_prompts(calls))


@pytest.mark.parametrize("text, message", [
    (PARENT.replace("<Start Sub Search 1", "<Start Sub Search 7"), "numbered"),
    (PARENT.replace("at level 1> Moving to Node #0,1", "at level 2> Moving to Node #0,1"), "level"),
    (PARENT.replace("Moving to Node #0,1\n<End", "Moving to Node #0,9\n<End"), "never generated"),
    (PARENT.replace("<Start Sub Search 1 at level 1> Moving to Node #0,1", "oops"), "bad spawn line"),
    (PARENT.replace("<Calling Sub Searches>\n", ""), "without"),
    ("Moving to Node #0\n<Calling Sub Searches>\n<End Calling Sub Searches>", "no children"),
])
def test_malformed_spawns_raise_clear_errors(text, message):
    with pytest.raises(tl.TraceFormatError, match=message):
        tl.child_prompts(text)


def test_extract_result_and_verify():
    assert tl.extract_result(CHILD_0) is None
    solved = ("...30,30 equal: Goal Reached\nMoving to Node #0\nCurrent State: 30:[94, 18, 89, 12], Operations: []\n"
              "Exploring Operation: 94-89=5, Resulting Numbers: [18, 12, 5]\n"
              "Generated Node #0,0: 30:[18, 12, 5] Operation: 94-89=5\nMoving to Node #0,0\n"
              "Current State: 30:[18, 12, 5], Operations: ['94-89=5']\n"
              "Exploring Operation: 18+12=30, Resulting Numbers: [5, 30]\n"
              "Exploring Operation: 30/5=6, Resulting Numbers: [6]\n6,30 equal: Goal Reached")
    result = tl.extract_result(solved)
    assert result.startswith("Moving to Node #0\n")
    verdict = tl.verify_result(result, [94, 18, 89, 12], 30)
    assert not verdict and "ends with" in verdict.reason  # claims the goal but ends at 6
    assert "no result" in tl.verify_result(None, [1, 2], 3).reason
    assert "no Goal Reached" in tl.verify_result("Exploring Operation: 1+2=3, Resulting Numbers: [3]", [1, 2], 3).reason


def test_tree_stats_counts_parallel_children_once_on_the_critical_path():
    child_1 = CHILD_0.replace("#0,0", "#0,1").replace("[18, 12, 5]", "[89, 12, 76]")
    joined = tl.join_text(PARENT, [None, None])
    tree = {"main_calls": [PARENT + "\n", joined + "No solution found.\n"],
            "sub_calls": [[{"main_calls": [CHILD_0]}, {"main_calls": [child_1]}]]}
    n = tl.count_tokens
    stats = tt.tree_stats(tree)
    new_after_join = n(joined + "No solution found.\n") - n(tl.parse_spawn(PARENT).before)
    assert stats.total_tokens == n(PARENT + "\n") + n(CHILD_0) + n(child_1) + new_after_join
    assert stats.critical_path == n(PARENT + "\n") + max(n(CHILD_0), n(child_1)) + new_after_join
    assert stats.longest_sequence == max(n(PARENT + "\n"), n(joined + "No solution found.\n"))
    assert (stats.n_threads, stats.n_spawns, stats.spawn_depth) == (3, 1, 1)
    rows = tt.sft_rows(tree)
    assert rows[0]["prompt"] == tl.root_prompt(30, [94, 18, 89, 12])
    assert rows[1] == {"prompt": joined, "completion": "No solution found.\n"}
    assert rows[2]["prompt"].startswith("Moving to Node #0,0\n")


def test_split_tokens_keeps_phrases_whole_and_digits_apart():
    pieces = tl.split_tokens("Moving to Node #0,12\nCurrent State: 30:[5], Operations: []")
    assert pieces[:5] == ["Moving to Node #", "0", ",", "1", "2"]
    assert "Current State: " in pieces and ", Operations: " in pieces


SOLVED_12 = ("Moving to Node #0\nCurrent State: 12:[3, 4, 5], Operations: []\n"
             "Exploring Operation: 5+4=9, Resulting Numbers: [3, 9]\n"
             "Exploring Operation: 9+3=12, Resulting Numbers: [12]\n12,12 equal: Goal Reached\n")


@pytest.mark.parametrize("hostile", ["7²", "٣", "１２", "3\u0663", "⁵"])
def test_numbers_are_ascii_digits_and_anything_else_is_a_format_error(hostile):
    with pytest.raises(tl.TraceFormatError):
        tl.parse_numbers(f"5, {hostile}")
    with pytest.raises(tl.TraceFormatError):
        tl.parse_operation(f"{hostile}+1=2")
    solved = SOLVED_12 + SOLVED_12
    assert tl.verify_trace(solved, (3, 4, 5), 12)
    verdict = tl.verify_trace(solved.replace("[3, 9]", f"[3, {hostile}]"), (3, 4, 5), 12)  # no exception
    assert not verdict


def test_other_scripts_digits_do_not_verify():
    arabic = "Exploring Operation: ٣+٤=٧, Resulting Numbers: [٧]\n٧,٧ equal: Goal Reached\n"
    assert not tl.verify_trace(arabic + arabic, (3, 4), 7)
    wide = "Exploring Operation: ３+４=７, Resulting Numbers: [７]\n7,7 equal: Goal Reached\n"
    assert not tl.verify_trace(wide + wide, (3, 4), 7)


def test_parsing_time_grows_linearly_with_the_text():
    """The benchmark's hostile 1 MB lines (benchmarks/bench_parsing.py): ten times the text must cost
    about ten times the time (a quadratic parser costs a hundred times; the slack absorbs a busy machine)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_parsing.py"
    spec = importlib.util.spec_from_file_location("bench_parsing", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name, (fn, unit) in bench.CASES.items():
        small, large = unit * (100_000 // len(unit)), unit * (1_000_000 // len(unit))
        assert bench.best_seconds(fn, large) < 30 * bench.best_seconds(fn, small) + 0.05, f"{name} is not linear"
