"""Agreement with the public APR reference implementation (tests/fixtures/apr_reference_traces.json)."""

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt


def test_fixture_has_spawns_and_failures(reference_cases):
    assert len(reference_cases) == 60
    assert sum(len(c["spawns"]) for c in reference_cases) > 40
    assert any(not c["solved"] for c in reference_cases)


def test_child_prompts_match_reference(reference_cases):
    for case in reference_cases:
        for spawn in case["spawns"]:
            assert tl.is_spawn(spawn["parent_text"])
            assert tl.child_prompts(spawn["parent_text"]) == spawn["child_prefixes"]


def test_child_results_match_reference(reference_cases):
    for case in reference_cases:
        for spawn in case["spawns"]:
            assert [tl.extract_result(t) for t in spawn["child_traces"]] == spawn["child_results"]


def test_join_text_matches_reference(reference_cases):
    for case in reference_cases:
        calls = case["trace_dict"]["main_calls"]
        for k, spawn in enumerate(case["spawns"]):
            joined = tl.join_text(spawn["parent_text"], spawn["child_results"])
            assert joined == spawn["join_prefix"]
            assert calls[k + 1].startswith(joined)


def test_final_results_and_verifier_match_reference(reference_cases):
    for case in reference_cases:
        calls = case["trace_dict"]["main_calls"]
        assert tl.extract_result(calls[-1]) == case["final_result"]
        assert bool(tl.verify_result(case["final_result"], case["nums"], case["target"])) == case["solved"]
        assert bool(tl.verify_trace(calls[-1], case["nums"], case["target"])) == case["solved"]
        assert all(tl.is_spawn(text) for text in calls[:-1]) and not tl.is_spawn(calls[-1])


def test_sosp_results_match_reference(reference_cases):
    for case in reference_cases:
        assert tl.extract_result(case["sosp_trace"]) == case["sosp_result"]
        verdict = tl.verify_result(case["sosp_result"], case["nums"], case["target"])
        assert bool(verdict) == case["sosp_solved"]


def test_root_prompt_matches_reference(reference_cases):
    for case in reference_cases:
        assert tl.root_prompt(case["target"], case["nums"]) == case["prompt"]
        assert case["trace_dict"]["main_calls"][0].startswith(case["prompt"] + "\n")


def test_reference_trees_walk_and_split_into_sft_rows(reference_cases):
    for case in reference_cases:
        tree = case["trace_dict"]
        stats = tt.tree_stats(tree)
        sequences = list(tt.iter_sequences(tree))
        assert stats.longest_sequence == max(map(tl.count_tokens, sequences))
        assert stats.n_threads == 1 + sum(len(children) for children in tree["sub_calls"])
        assert stats.longest_sequence <= stats.critical_path <= stats.total_tokens
        rows = tt.sft_rows(tree)
        assert len(rows) == len(sequences)
        assert sorted(r["prompt"] + r["completion"] for r in rows) == sorted(sequences)


def test_tokenizer_pieces_round_trip(reference_cases):
    for case in reference_cases:
        for text in [case["sosp_trace"], *tt.iter_sequences(case["trace_dict"])]:
            pieces = tl.split_tokens(text)
            assert "".join(pieces) == text
            assert tl.count_tokens(text) == len(pieces)
