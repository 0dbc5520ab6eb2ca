"""GRPO over spawn trees: the maths on hand-made fixtures, the masks, a nested tree's shared
advantage, the direction of an update, resume after a kill, and the command line."""

import json
import math
import random
from pathlib import Path

import pytest
import torch

from apr_mini import grpo, grpo_train, packing, rollouts
from apr_mini import trace_language as tl
from apr_mini import trace_trees as tt
from apr_mini.config import GRPOConfig, UserFacingError, get_grpo_config, get_reproduce_config
from apr_mini.countdown import problem_chunk
from apr_mini.data import load_problems
from apr_mini.demonstrations import apr_tree
from apr_mini.engine import Limits, ScriptedBackend, run_problems, scripted_from_trees
from apr_mini.results import available_models
from apr_mini.tokenizer import build_tokenizer
from test_engine import TASK

ROOT = Path(__file__).parent.parent
TINY_APR = ROOT / "data" / "tiny-apr"
TRAIN = ROOT / "data" / "countdown-cpu" / "problems_train.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def nested_records():
    """Engine records (with per-call stats) of demonstrations whose children spawn again."""
    problems = problem_chunk(TASK, 3, "grpo", 0, 8)
    trees = [apr_tree(p, beam=3, sub_beam=4, spawn_probability=1.0, max_depth=2, rng=random.Random(i))
             for i, p in enumerate(problems)]
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=Limits(max_depth=2))
    assert max(r["metrics"]["spawn_depth"] for r in records) == 2, "the fixture should nest"
    return records


# -- advantages -----------------------------------------------------------------------------------

def test_group_advantages_divided_by_std_and_mean_centred_only():
    rewards = [1, 0, 0, 1, 1, 1, 1, 1]  # group 1: two of four; group 2: all equal (no signal)
    scaled, signal = grpo.group_advantages(rewards, 4, "group")
    std = math.sqrt(((0.5 ** 2) * 4) / 3)  # Bessel-corrected, as TRL
    assert scaled[:4] == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4),
                                        0.5 / (std + 1e-4)])
    assert scaled[4:] == [0.0] * 4
    centred, _ = grpo.group_advantages(rewards, 4, "none")
    assert centred == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert signal == [True, False]


def test_zero_signal_groups_are_skipped_and_counted(nested_records, tokenizer):
    records = [dict(r, advantage=a) for r, a in zip(nested_records, [1, -1, 0.5, -0.5, 0, 0, 0, 0])]
    rows = grpo.batch_rows(records, [True, False], tokenizer)
    assert {r.tree for r in rows} == {0, 1, 2, 3}
    config = GRPOConfig(num_generations=4)
    rewards, signal, trees, scored = grpo.score_rollouts([dict(r) for r in nested_records], tokenizer, config)
    assert len(trees) == len(nested_records) and len(signal) == 2
    built = {id(r) for tree in trees for r in tree}
    assert scored and all(id(row) in built for row in scored)  # a step builds each row once
    with pytest.raises(ValueError):
        grpo.group_advantages([1, 0, 1], 2)


def test_a_placebo_run_deals_each_groups_rewards_to_its_trees_at_random(nested_records, tokenizer):
    """``shuffle_rewards`` keeps every group's rewards (so as many groups carry a signal, of the same
    size) and only changes which tree gets which; the same (seed, step) deals the same."""
    import random

    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0] * 8
    dealt = grpo.shuffled_within_groups(rewards, 4, random.Random(0))
    for start in range(0, len(rewards), 4):
        assert sorted(dealt[start:start + 4]) == sorted(rewards[start:start + 4])
    assert dealt != rewards and dealt == grpo.shuffled_within_groups(rewards, 4, random.Random(0))
    config = GRPOConfig(num_generations=4, shuffle_rewards=True)
    true_rewards, _, _, _ = grpo.score_rollouts([dict(r) for r in nested_records], tokenizer, GRPOConfig(num_generations=4))
    placebo = [grpo.score_rollouts([dict(r) for r in nested_records], tokenizer, config, step)[0] for step in range(6)]
    assert all(sorted(p[:4]) == sorted(true_rewards[:4]) for p in placebo)
    assert any(p != true_rewards for p in placebo)


# -- the loss ---------------------------------------------------------------------------------------

def test_clipped_loss_against_hand_computed_values():
    logps = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    old = torch.log(torch.tensor([0.25, 0.5, 0.8, 0.25]))  # ratios 2, 1, 0.625, 2
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, kl = grpo.per_token_loss(logps, old, adv, epsilon=0.2)
    # A > 0: min(r, clip(r)) A -> 1.2, 1; A < 0: min(-r, -clip(r)) -> -0.8 (clip binds), -2 (r binds)
    assert loss.tolist() == pytest.approx([-1.2, -1.0, 0.8, 2.0])
    assert kl.tolist() == [0.0] * 4
    high, _ = grpo.per_token_loss(logps, old, adv, epsilon=0.2, epsilon_high=0.28)
    assert high[0].item() == pytest.approx(-1.28)
    ref = torch.log(torch.tensor([0.25, 0.5, 0.5, 1.0]))
    with_kl, kl = grpo.per_token_loss(logps, old, adv, epsilon=0.2, beta=0.1, ref_logps=ref)
    k3 = [0.5 - math.log(0.5) - 1, 0.0, 0.0, 2 - math.log(2) - 1]
    assert kl.tolist() == pytest.approx(k3)
    assert (with_kl - loss).tolist() == pytest.approx([0.1 * k for k in k3], abs=1e-6)


def test_token_weights_count_each_tree_once():
    rows = [grpo.Row(0, "root", [1] * 10, 4), grpo.Row(0, "root/0.0", [1] * 6, 3), grpo.Row(1, "root", [1] * 9, 4)]
    w = grpo.token_weights(rows, "grpo", "tree")
    per_tree = [w[0] * 6 + w[1] * 3, w[2] * 5]
    assert per_tree == pytest.approx([0.5, 0.5])
    assert w[0] * 6 == pytest.approx(w[1] * 3)  # the tree's weight shared by its rows
    w = grpo.token_weights(rows, "grpo", "sequence")
    assert [w[0] * 6, w[1] * 3, w[2] * 5] == pytest.approx([1 / 3] * 3)
    w = grpo.token_weights(rows, "dr_grpo", "sequence", max_completion_length=100)
    assert w == pytest.approx([1 / 300] * 3)
    assert grpo.token_weights(rows, "dapo") == pytest.approx([1 / 14] * 3)


# -- rows and masks -----------------------------------------------------------------------------------

def test_no_prompt_or_join_token_is_trained(nested_records, tokenizer):
    for index, record in enumerate(nested_records):
        rows = grpo.tree_rows(record["tree"], tokenizer, index)
        calls = rollouts.tree_calls(record["tree"])
        assert len(rows) == len(calls) == sum(len(t["main_calls"]) for t in tt.iter_threads(record["tree"]))
        for row, call in zip(rows, calls):
            prompt, completion = row.ids[:row.n_prompt], row.ids[row.n_prompt:]
            assert tokenizer.decode(prompt, skip_special_tokens=True) == call.given
            assert prompt[0] == tokenizer.bos_token_id
            if call.eos:
                assert completion[-1] == tokenizer.eos_token_id
                completion = completion[:-1]
            else:  # a spawn: its closing marker is trained (a model stops right after it; demonstrations add "\n")
                marker = call.generated.rstrip("\n")
                assert tl.is_spawn(call.generated) and marker.endswith(tl.SPAWN_CLOSE)
                assert tokenizer.convert_ids_to_tokens(completion[len(tokenizer(marker, add_special_tokens=False)["input_ids"]) - 1]) == tl.SPAWN_CLOSE
            assert tokenizer.decode(completion) == call.generated
            assert tl.JOIN_OPEN not in call.generated  # the join text is given, never trained
        joins = [c for c in calls if tl.JOIN_OPEN in c.given]
        assert len(joins) == sum(t["main_calls"].__len__() - 1 for t in tt.iter_threads(record["tree"]))


def test_one_advantage_broadcast_across_a_nested_tree(nested_records, tokenizer):
    records = [dict(r, advantage=a) for r, a in zip(nested_records, [0.7, -0.3, 0.1, 0.2, 0, 0, 0, 0])]
    rows = grpo.batch_rows(records, [True, False], tokenizer)
    nested = [r for r in rows if r.thread.count("/") == 2]
    assert nested, "some trained rows come from grandchildren"
    for row in rows:
        assert row.advantage == records[row.tree]["advantage"]
    roots = grpo.batch_rows(records, [True, False], tokenizer, threads="root")
    assert roots and {r.thread for r in roots} == {"root"}
    assert len(roots) == sum(r.thread == "root" for r in rows)


def test_failed_child_reads_as_no_solution_in_the_trained_join(tokenizer):
    problems = problem_chunk(TASK, 3, "grpo", 0, 4)
    trees = [apr_tree(p, beam=3, sub_beam=4, spawn_probability=1.0, max_depth=1, rng=random.Random(i))
             for i, p in enumerate(problems)]
    limits = Limits(max_depth=1, max_thread_tokens=40)  # children run out of tokens: failures
    records = run_problems(ScriptedBackend(scripted_from_trees(trees)), problems, limits=limits)
    failed = [r for r in records if any("limit" in f for f in r["metrics"]["failures"])]
    assert failed
    for record in failed:
        rows = grpo.tree_rows(record["tree"], tokenizer)
        assert any(r.truncated for r in rows)


# -- optimisation ------------------------------------------------------------------------------------

def _tiny_model():
    from transformers import AutoModelForCausalLM

    from apr_mini.packing import use_packed_attention

    model = AutoModelForCausalLM.from_pretrained(str(TINY_APR))
    use_packed_attention(model)
    return model


def test_a_few_steps_raise_positive_and_lower_negative_completions(nested_records, tokenizer):
    torch.manual_seed(0)
    model = _tiny_model()
    records = [dict(r, advantage=a) for r, a in zip(nested_records[:4], [1.0, -1.0, 1.0, -1.0])]
    rows = grpo.batch_rows(records, [True, True], tokenizer)
    config = GRPOConfig(learning_rate=3e-4, beta=0.0, block_tokens=2048)

    def tree_logps():  # each tree's completions' total log-probability
        model.train()
        with torch.no_grad():
            logps, _ = packing.block_logps(model, rows)
        totals = [0.0] * len(records)
        for row, lp in zip(rows, logps):
            totals[row.tree] += lp.sum().item()
        return totals

    before = tree_logps()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    for _ in range(3):
        stats = grpo.optimize(model, optimizer, rows, config)
    change = [a - b for a, b in zip(tree_logps(), before)]
    assert stats["grad_norm"] > 0
    assert change[0] > 0 and change[2] > 0, change
    assert change[1] < 0 and change[3] < 0, change


def test_packed_log_probs_equal_each_row_alone(nested_records, tokenizer):
    model = _tiny_model().train()
    rows = grpo.tree_rows(nested_records[0]["tree"], tokenizer)[:4]
    with torch.no_grad():
        packed, _ = packing.block_logps(model, rows)
        alone = [packing.block_logps(model, [r])[0][0] for r in rows]
    for a, b in zip(packed, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# -- a run: resume, collapse, the command line -----------------------------------------------------------

def _run(out, max_steps, monkeypatch=None, **changes):
    config = get_grpo_config("tiny", max_steps=max_steps, reward="thread_penalty", eval_steps=0, **changes)
    problems = load_problems(TRAIN, 20)
    return grpo_train.train(TINY_APR, "apr", problems, out, config, progress=False)


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    _run(tmp_path / "whole", 3)
    real_step = grpo.grpo_step
    calls = []

    def killed_in_step_3(*args, **kwargs):
        calls.append(kwargs["step"])
        if kwargs["step"] == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_step", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", 3)
    monkeypatch.setattr(grpo, "grpo_step", real_step)
    _run(tmp_path / "killed", 3)

    def curve(folder):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
                for line in (folder / "curve.jsonl").read_text().splitlines()]

    assert curve(tmp_path / "killed") == curve(tmp_path / "whole")
    assert any(p["rows"] for p in curve(tmp_path / "whole")), "the run should train something"
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_a_resume_with_another_config_is_refused(tmp_path):
    _run(tmp_path, 1)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(UserFacingError, match="another source model or config"):
        _run(tmp_path, 2, learning_rate=5e-4)


def test_collapse_is_judged_against_the_first_steps_and_stops_the_run_with_a_clear_message(tmp_path, monkeypatch):
    """A model that starts with 20% clean trees (SoS+ at 4 numbers) is held to its own start, over
    windows of steps: a dip to 10% passes, a fall to 0% stops it, even across a resume."""
    real_step = grpo.grpo_step
    shares = {1: 0.2, 2: 0.2, 3: 0.2, 4: 0.2, 5: 0.2, 6: 0.1, 7: 0.0}

    def step_with_share(*args, **kwargs):
        point, records = real_step(*args, **kwargs)
        return {**point, "well_formed": shares[kwargs["step"]]}, records

    monkeypatch.setattr(grpo, "grpo_step", step_with_share)
    assert grpo_train.COLLAPSE_WINDOW == 5
    _run(tmp_path, 6, min_well_formed=0.8)  # steps 2-6 average 18%, over 0.8 x 20%
    (tmp_path / "metrics.json").unlink()  # train on from step 6
    with pytest.raises(UserFacingError, match=r"collapsed at step 7: 14% of the last 5 steps' .* 0.8 x .* 20%"):
        _run(tmp_path, 7, min_well_formed=0.8)
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 7
    record = json.loads((tmp_path / "collapsed.json").read_text())
    assert record["collapsed_at_step"] == 7 and record["last_steps"][-1]["well_formed"] == 0.0
    assert record["config"]["min_well_formed"] == 0.8 and record["source_fingerprint"].startswith("tiny-")
    config = get_reproduce_config("tiny", sosp_grpo=(str(tmp_path),))
    assert available_models(config)[1] == [f"{tmp_path} (its GRPO run collapsed at step 7)"]  # reported, with why


def test_a_budget_models_trees_are_conditioned_per_problem(tokenizer):
    """sub_call_budgets: each problem's group shares one drawn budget, in its root prompt and record."""
    torch.manual_seed(0)
    problems = load_problems(TRAIN, 3)
    config = GRPOConfig(num_generations=2, sub_call_budgets=[3, 5], max_batch=8)  # a list, as a resumed run's JSON
    assert config.sub_call_budgets == (3, 5)
    budgets = grpo.step_budgets(problems, config, step=4)
    assert budgets == grpo.step_budgets(problems, config, step=4) and set(budgets) <= {3, 5}
    records = grpo.step_rollouts(_tiny_model(), tokenizer, problems, config, kind="apr", step=4)
    for record in records:
        budget = budgets[record["id"] // 2]
        assert record["sub_call_budget"] == budget
        assert record["tree"]["main_calls"][0].startswith(tl.condition_prefix("sub_calls", budget))
    assert grpo.step_budgets(problems, GRPOConfig(), step=4) == [None] * 3
    with pytest.raises(ValueError, match="sub_call_budgets"):
        GRPOConfig(sub_call_budgets=(0,))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="loss_type"):
        GRPOConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="num_generations"):
        GRPOConfig(num_generations=0)


def test_a_methods_preset_changes_apply_before_the_callers_own():
    apr, sosp = get_grpo_config("cpu", kind="apr"), get_grpo_config("cpu", kind="sosp")
    assert (apr.beta, apr.loss_type) == (0.04, "dr_grpo")
    assert sosp == get_grpo_config("cpu") and (sosp.beta, sosp.loss_type) == (0.001, "grpo")
    assert get_grpo_config("cpu", kind="apr", loss_type="grpo").loss_type == "grpo"
    assert get_grpo_config("tiny", kind="apr") == get_grpo_config("tiny")


def test_tiny_end_to_end_through_the_command_line(tmp_path, capsys):
    from apr_mini.__main__ import main

    out, ship = tmp_path / "run", tmp_path / "ship"
    main(["grpo", "--profile", "tiny", "--checkpoint", str(TINY_APR), "--kind", "apr", "--problems", str(TRAIN),
          "--n-train", "20", "--out", str(out), "--ship", str(ship), "--ship-val", "6", "--reward", "thread_penalty",
          "--mask-truncated-completions", "--no-progress"])
    printed = capsys.readouterr().out
    assert "shipped to" in printed and "paired difference" in printed
    metrics = json.loads((ship / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["trees"] == 3 * 2 * 4
    assert metrics["config"]["mask_truncated_completions"] is True and metrics["config"]["reward"] == "thread_penalty"
    assert metrics["validation"]["accuracy_difference"]["n"] == 6
    assert (ship / "model.safetensors").exists() and (ship / "curve.jsonl").exists()
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert curve[0]["step"] == 0 and "eval" in curve[0] and "eval" in curve[-1]
    for key in ("reward", "accuracy", "children", "total_tokens", "longest_sequence", "critical_path", "well_formed",
                "kl", "entropy", "skipped_groups", "rollout_s", "train_s"):
        assert key in curve[1]


def test_command_line_errors_are_one_line(tmp_path):
    from apr_mini.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["grpo", "--checkpoint", str(tmp_path), "--kind", "apr"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["grpo", "--checkpoint", str(TINY_APR), "--kind", "apr", "--num-generations", "0"])
    with pytest.raises(SystemExit):
        main(["grpo", "--checkpoint", str(TINY_APR), "--kind", "apr", "--sub-call-budgets", "3,four"])


def test_training_problems_of_another_task_are_refused(tmp_path, capsys):
    """A 3-number model given the 4-number task's problems (or the reverse) would learn nothing: the
    deep task's first GRPO run trained on the 3-number problems, the default then, and never verified."""
    from apr_mini.__main__ import main

    deep = ROOT / "data" / "countdown-cpu4" / "problems_train.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["grpo", "--profile", "tiny", "--checkpoint", str(TINY_APR), "--kind", "apr", "--problems", str(deep),
              "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "outside the task" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_default_training_problems_are_the_profiles_task(monkeypatch):
    from apr_mini.cli_run import _committed_train_split
    from apr_mini.config import get_profile

    monkeypatch.chdir(ROOT)
    assert _committed_train_split(get_profile("cpu4")) == "data/countdown-cpu4/problems_train.jsonl"
    assert _committed_train_split(get_profile("tiny")) == "data/countdown-cpu/problems_train.jsonl"  # the same task
    assert _committed_train_split(get_profile("t4")) == "data/countdown-t4/problems_train.jsonl"  # not committed


def test_curve_points_past_the_last_checkpoint_are_dropped(tmp_path):
    """A kill after a step's curve line but before its first checkpoint leaves a stale line; the rerun drops it."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "curve.jsonl").write_text(json.dumps({"step": 1, "reward": -1.0}) + "\n")
    _run(tmp_path, 1)
    curve = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [1] and curve[0]["reward"] != -1.0
