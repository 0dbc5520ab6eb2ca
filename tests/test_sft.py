"""A few steps of real SFT on the tiny profile: the pipeline trains, checkpoints, resumes and evaluates."""

import json

import pytest

from apr_mini import trace_language as tl
from apr_mini.config import PROFILES
from apr_mini.data import build_dataset
from apr_mini.inference import evaluate
from apr_mini.sft import SFTRun, load_rows, overflow_report, tokenize_rows, train, warm_start
from apr_mini.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    profile = PROFILES["tiny"]
    profile = profile.replace(data=profile.data.__class__(n_train=60, n_val=10, seed=0))
    build_dataset(profile, out, progress=False)
    return out


def test_rows_are_tokenized_with_completion_masks_and_over_long_rows_dropped(tiny_data):
    tokenizer = build_tokenizer()
    rows = load_rows(tiny_data, "apr")
    dataset, report = tokenize_rows(rows, tokenizer, context=1024)
    assert report["kept"] + report["dropped_over_context"] == len(rows) == report["rows"]
    first = dataset[0]
    assert first["input_ids"][0] == tokenizer.bos_token_id and first["input_ids"][-1] == tokenizer.eos_token_id
    assert len(first["completion_mask"]) == len(first["input_ids"]) and first["completion_mask"][0] == 0
    _, short = tokenize_rows(rows, tokenizer, context=100)
    assert short["dropped_over_context"] > 0


def test_truncation_cuts_over_long_rows_at_the_window_as_the_reference_does(tiny_data):
    tokenizer = build_tokenizer()
    rows = load_rows(tiny_data, "sosp")
    _, dropped = tokenize_rows(rows, tokenizer, context=100)
    cut, report = tokenize_rows(rows, tokenizer, context=100, overflow="truncate")
    assert report["truncated_over_context"] == dropped["dropped_over_context"] > 0
    assert report["kept"] == len(rows) and max(len(r["input_ids"]) for r in cut) == 100
    ended = sum(r["input_ids"][-1] == tokenizer.eos_token_id for r in cut)
    assert ended == dropped["kept"]  # a cut search does not end inside the window: no EOS
    with pytest.raises(ValueError, match="overflow"):
        SFTRun(overflow="pad")


def test_a_cpu_model_warm_starts_the_deep_task_with_a_longer_window():
    from apr_mini.config import UserFacingError

    tokenizer = build_tokenizer()
    model = warm_start("data/cpu-sosp", "cpu4", tokenizer)
    assert model.config.max_position_embeddings == 1536
    with pytest.raises(UserFacingError, match="not a 'tiny'-shaped model"):
        warm_start("data/cpu-sosp", "tiny", tokenizer)


def test_overflow_report_counts_what_tokenize_rows_drops(tiny_data, capsys):
    tokenizer = build_tokenizer()
    report = overflow_report(tiny_data, contexts=(100, 1024), tokenizer=tokenizer)
    for kind in ("sosp", "apr"):
        rows = load_rows(tiny_data, kind)
        for context in (100, 1024):
            dropped = tokenize_rows(rows, tokenizer, context=context)[1]["dropped_over_context"]
            assert report[kind]["over"][context] == dropped / len(rows)
    assert report["sosp"]["over"][100] > report["apr"]["over"][100]  # whole searches are longer than threads
    from apr_mini.__main__ import main

    main(["lengths", "--data", str(tiny_data), "--contexts", "100", "1024"])
    assert "| SoS+ |" in capsys.readouterr().out

def test_train_checkpoints_resumes_and_evaluates(tiny_data, tmp_path):
    from apr_mini.countdown import Problem
    from apr_mini.data import read_jsonl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    val = [Problem.from_dict(r) for r in read_jsonl(tiny_data / "problems_val.jsonl")]
    first = SFTRun(kind="apr", model="tiny", max_tokens=8_000, eval_every=0, eval_problems=3, save_every=4)
    metrics = train(first, tiny_data, tmp_path, val_problems=val, command="test")
    # the budget counts trained tokens: packed blocks are not full, so it takes more steps than 8,000 / 2,048
    assert metrics["steps"] > 8_000 // 2048 and 7_000 <= metrics["tokens_seen"] <= 8_000 + 2048
    longer = SFTRun(kind="apr", model="tiny", max_tokens=16_000, eval_every=0, eval_problems=3, save_every=4)
    resumed = train(longer, tiny_data, tmp_path, val_problems=val, command="test")
    assert resumed["steps"] > metrics["steps"] and 15_000 <= resumed["tokens_seen"] <= 16_000 + 2048
    curve = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [metrics["steps"], resumed["steps"]]  # each step once
    assert "children_solved_of_solvable" in curve[0] and curve[1]["tokens"] > curve[0]["tokens"]
    assert train(longer, tiny_data, tmp_path, val_problems=val)["steps"] == resumed["steps"]  # nothing more to do
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final")
    scores = evaluate(model, tokenizer, val[:2], kind="sosp")
    assert scores["n"] == 2 and 0 <= scores["verified"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["command"] == "test"


def test_generation_stops_rows_independently_and_respects_the_context():
    from apr_mini.generation import generate
    from apr_mini.models import build_model

    tokenizer = build_tokenizer()
    model = build_model("tiny", tokenizer)
    prompts = [tl.root_prompt(24, [4, 9, 3]), tl.root_prompt(30, [5, 6, 7, 11]) + "\nExploring Operation: "]
    samples = generate(model, tokenizer, prompts, max_new_tokens=7)
    assert [s.prompt for s in samples] == prompts
    assert all(s.new_tokens <= 7 for s in samples)
    assert generate(model, tokenizer, []) == []


def test_packed_attention_matches_each_row_alone():
    import torch

    from apr_mini.models import build_model
    from apr_mini.packing import use_packed_attention

    tokenizer = build_tokenizer()
    rows = [tl.root_prompt(24, [3, 8, 1]) + "\nExploring Operation: 3*8=24", tl.root_prompt(10, [5, 2, 7]), "Moving"]
    ids = [tokenizer(r)["input_ids"] for r in rows]
    packed = torch.tensor([sum(ids, [])])
    positions = torch.tensor([[p for row in ids for p in range(len(row))]])
    model = build_model("tiny", tokenizer, seed=0).train()
    alone = torch.cat([model(input_ids=torch.tensor([row])).logits for row in ids], dim=1)
    # as TRL trains: no cache, so transformers builds a block-diagonal mask from the position ids
    masked = model(input_ids=packed, position_ids=positions, use_cache=False).logits
    use_packed_attention(model)
    by_row = model(input_ids=packed, position_ids=positions, use_cache=False).logits
    assert model.config._attn_implementation == "apr_mini_packed"
    torch.testing.assert_close(by_row, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(by_row, masked, atol=1e-5, rtol=1e-4)
    by_row.sum().backward()  # gradients flow through the per-row path
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_init_continues_from_a_checkpoint_and_refuses_another_model(tiny_data, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from apr_mini.config import UserFacingError

    run = SFTRun(kind="sosp", model="tiny", max_tokens=2_000, eval_every=0, eval_problems=0, init="data/tiny-sosp")
    train(run, tiny_data, tmp_path / "continued")
    start = AutoModelForCausalLM.from_pretrained("data/tiny-sosp").state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "continued" / "final").state_dict()
    moved = [name for name in start if not torch.equal(start[name], after[name])]
    fresh = SFTRun(kind="sosp", model="tiny", max_tokens=2_000, eval_every=0, eval_problems=0)
    train(fresh, tiny_data, tmp_path / "fresh")
    scratch = AutoModelForCausalLM.from_pretrained(tmp_path / "fresh" / "final").state_dict()
    # trained a little from the checkpoint: far closer to it than a model trained from scratch
    distance = lambda a: sum((a[n] - start[n]).norm() for n in start)
    assert moved and distance(after) < distance(scratch) / 4
    with pytest.raises(UserFacingError, match="not a 'cpu'-shaped model"):
        train(SFTRun(kind="sosp", model="cpu", max_tokens=2_000, eval_problems=0, init="data/tiny-sosp"),
              tiny_data, tmp_path / "wrong")
