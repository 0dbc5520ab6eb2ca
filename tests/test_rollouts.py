"""GRPO's rollouts keep what the sampler drew: ids (stop token included) and log-probs per call, the
rows train on those ids, and :func:`apr_mini.rollouts.token_agreement` measures what re-tokenizing
the text would have changed."""

import copy
from pathlib import Path

import pytest
import torch

from apr_mini import grpo, rollouts
from apr_mini import trace_language as tl
from apr_mini.config import get_grpo_config
from apr_mini.data import load_problems
from apr_mini.models import load_model
from apr_mini.packing import use_packed_attention
from apr_mini.tokenizer import load_tokenizer

TINY_APR = Path(__file__).parent.parent / "data" / "tiny-apr"


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model, tokenizer = load_model(TINY_APR), load_tokenizer(TINY_APR)
    use_packed_attention(model)
    return model, tokenizer


@pytest.fixture(scope="module")
def sampled(policy):
    model, tokenizer = policy
    problems = load_problems(TINY_APR / "problems_val.jsonl", 3)
    return rollouts.rollout(model, tokenizer, problems, num_generations=2, kind="apr", seed=3)


def test_every_call_keeps_its_sampled_ids_ending_in_its_stop_token(sampled, policy):
    _, tokenizer = policy
    stop_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(tl.SPAWN_CLOSE)}
    calls = [call for record in sampled for call in rollouts.tree_calls(record["tree"])]
    assert calls and all(len(c.token_ids) == len(c.logprobs) > 0 for c in calls)
    for call in calls:
        assert tokenizer.decode(list(call.token_ids), skip_special_tokens=True) == call.generated
        assert (call.token_ids[-1] in stop_ids) != call.truncated
        assert all(lp <= 0 for lp in call.logprobs)


def test_rows_train_the_sampled_ids_with_the_samplers_log_probs(sampled, policy):
    _, tokenizer = policy
    for index, record in enumerate(sampled):
        for call, row in zip(rollouts.tree_calls(record["tree"]), rollouts.tree_rows(record["tree"], tokenizer, index)):
            assert row.ids[row.n_prompt:] == list(call.token_ids)
            assert row.ids[:row.n_prompt] == tokenizer(call.given)["input_ids"]
            assert row.sampled_logps == list(call.logprobs)


def test_the_samplers_log_probs_are_the_training_passes(sampled, policy):
    """Batched KV-cache decoding and one packed training pass agree on every sampled token."""
    model, tokenizer = policy
    report = rollouts.token_agreement(sampled, tokenizer, model)
    assert report["calls"] > 0 and report["tokens"] > 0
    assert report["logp_gap_max"] < 1e-3
    trees = [rollouts.tree_rows(r["tree"], tokenizer, i) for i, r in enumerate(sampled)]
    assert rollouts.token_agreement(sampled, tokenizer, model, trees) == report  # a step passes its rows


def test_a_sampled_special_token_is_trained_though_the_text_drops_it(sampled, policy):
    """The decoder skips special tokens, so re-tokenizing a call that sampled <pad> mid-way would
    train ids the policy never drew; the sampled ids keep it, and token_agreement counts it."""
    _, tokenizer = policy
    record = copy.deepcopy(sampled[0])
    call = record["tree"]["calls"][0]
    call["token_ids"] = [tokenizer.pad_token_id] + call["token_ids"]
    call["logprobs"] = [-9.0] + call["logprobs"]
    again = rollouts.tree_rows(record["tree"], tokenizer, sampled=False)[0]
    row = rollouts.tree_rows(record["tree"], tokenizer)[0]
    assert row.ids[row.n_prompt] == tokenizer.pad_token_id and row.n_completion == again.n_completion + 1
    report = rollouts.token_agreement([record], tokenizer)
    assert report["special_tokens_sampled"] == {"<pad>": 1}
    assert report["calls_that_differ"] > 0 and report["tokens_gained_or_lost"] == 1


def test_a_grpo_step_reports_what_it_trained_on(policy):
    model, tokenizer = policy
    config = get_grpo_config("tiny", problems_per_step=2, num_generations=2)
    problems = load_problems(TINY_APR / "problems_val.jsonl", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # measure only: the weights stay
    point, _ = grpo.grpo_step(model, tokenizer, optimizer, problems, config, kind="apr", step=1)
    assert point["retokenized_differs"] == 0.0 and point["special_tokens_sampled"] == 0
    assert isinstance(point["failures"], dict) and point["advantage_abs"] >= 0
    if point["rows"]:
        assert point["min_logp"] <= 0 and 0 <= point["rare_tokens"] <= 1 and point["sampler_gap"] < 1e-3
