"""The in-process transformers backend on the shipped tiny APR checkpoint: the hand-written
continuous-batching loop decodes what ``model.generate`` decodes, and both join strategies agree."""

from pathlib import Path

import pytest
import torch

from apr_mini import trace_language as tl
from apr_mini.backends import TransformersBackend
from apr_mini.serving import cut_at_spawn
from apr_mini.engine import Orchestrator, Request, run_problems
from apr_mini.generation import generate
from apr_mini.data import load_problems
from test_engine import bare

CHECKPOINT = Path(__file__).parents[1] / "data" / "tiny-apr"


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM

    from apr_mini.tokenizer import load_tokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(CHECKPOINT), load_tokenizer(CHECKPOINT)


@pytest.fixture(scope="module")
def problems():
    return load_problems(CHECKPOINT / "problems_val.jsonl", 6)


def drain(backend, requests):
    done = backend.step(requests)
    while len(done) < len(requests):
        done += backend.step([])
    return {c.key: c for c in done}


def test_batched_loop_decodes_what_generate_decodes(model_and_tokenizer, problems):
    model, tokenizer = model_and_tokenizer
    prompts = [tl.root_prompt(p.target, p.nums) for p in problems]
    reference = generate(model, tokenizer, prompts)
    done = drain(TransformersBackend(model, tokenizer), [Request(i, p, 1000) for i, p in enumerate(prompts)])
    for i, sample in enumerate(reference):
        # generate() goes on after a spawn (newline, EOS); the engine's call ends at the marker
        assert done[i].text == cut_at_spawn(sample.completion)
        assert done[i].reason == "stop" and done[i].prompt_tokens == tl.count_tokens(prompts[i]) + 1


def test_join_strategies_and_batch_sizes_give_the_same_trees(model_and_tokenizer, problems):
    model, tokenizer = model_and_tokenizer
    cached = run_problems(TransformersBackend(model, tokenizer, join="prefix-cache"), problems)
    fresh = run_problems(TransformersBackend(model, tokenizer, join="re-prefill"), problems)
    one_at_a_time = run_problems(TransformersBackend(model, tokenizer, max_batch=1), problems[:3], max_live=1)
    assert [bare(r["tree"]) for r in cached] == [bare(r["tree"]) for r in fresh]
    assert [bare(r["tree"]) for r in cached[:3]] == [bare(r["tree"]) for r in one_at_a_time]
    assert any(r["metrics"]["n_spawns"] for r in cached), "the tiny APR model should spawn"
    prefilled = [sum(r["metrics"]["prefill_tokens"] for r in run) for run in (cached, fresh)]
    assert prefilled[0] < prefilled[1]
    assert sum(r["metrics"]["cached_tokens"] for r in cached) == prefilled[1] - prefilled[0]
    assert all(r["metrics"]["cached_tokens"] == 0 for r in fresh)
    with pytest.raises(ValueError, match="max_batch must be at least 1"):  # 0 rows would never decode
        TransformersBackend(model, tokenizer, max_batch=0)


def test_prefills_cut_to_a_memory_budget_decode_the_same_trees(model_and_tokenizer, problems, monkeypatch):
    """A batch of long prompts is prefilled in pieces whose padded attention fits the budget
    (deep trees' evaluations held 7.8 GB without it); the trees are the ones one batch gives."""
    from apr_mini import backends

    model, tokenizer = model_and_tokenizer
    whole = run_problems(TransformersBackend(model, tokenizer, join="re-prefill"), problems)
    cuts, original = [], backends._prefill_groups

    def counted(rows):
        cuts.append(len(groups := original(rows)))
        return groups

    monkeypatch.setattr(backends, "PREFILL_SCORES", 2_000)
    monkeypatch.setattr(backends, "_prefill_groups", counted)
    pieces = run_problems(TransformersBackend(model, tokenizer, join="re-prefill"), problems)
    assert max(cuts) > 1, "the budget should cut some prefill"
    assert [bare(r["tree"]) for r in pieces] == [bare(r["tree"]) for r in whole]


def test_sampling_is_seeded_per_thread_not_per_batch(model_and_tokenizer, problems):
    model, tokenizer = model_and_tokenizer
    together = run_problems(TransformersBackend(model, tokenizer), problems[:3], temperature=1.0, seed=7)
    engine = Orchestrator(TransformersBackend(model, tokenizer), temperature=1.0, seed=7)
    [alone] = engine.run([(1, problems[1])])   # the same problem id, so the same thread seeds
    greedy = run_problems(TransformersBackend(model, tokenizer), problems[:3])
    assert bare(together[1]["tree"]) == bare(alone["tree"])
    assert [bare(r["tree"]) for r in together] != [bare(r["tree"]) for r in greedy]


def test_join_strategy_is_checked(model_and_tokenizer):
    with pytest.raises(ValueError, match="join must be"):
        TransformersBackend(*model_and_tokenizer, join="stitch")
