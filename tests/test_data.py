import json
import subprocess
import sys

import pytest

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt
from apr_mini.config import PROFILES, TaskConfig, get_profile
from apr_mini.data import build_dataset, demonstrate_all, make_splits, read_jsonl, sft_rows_apr, unique_problems

TINY = PROFILES["tiny"]


def test_profiles_and_env_var(monkeypatch):
    assert set(PROFILES) == {"tiny", "cpu", "cpu4", "t4", "gpu"}
    monkeypatch.setenv("APR_PROFILE", "gpu")
    assert get_profile().name == "gpu"
    assert get_profile("tiny").name == "tiny"
    monkeypatch.setenv("APR_PROFILE", "huge")
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile()
    paper = PROFILES["gpu"].task
    assert (paper.n_numbers, paper.max_number, paper.min_target, paper.max_target) == (4, 99, 10, 100)


def test_every_profile_has_its_model_grpo_and_reproduce_presets():
    from apr_mini.config import GRPO_PRESETS, REPRODUCE_PRESETS
    from apr_mini.models import MODEL_PRESETS

    for name in PROFILES:
        assert name in MODEL_PRESETS and name in GRPO_PRESETS and name in REPRODUCE_PRESETS
        assert MODEL_PRESETS[name].head_dim * MODEL_PRESETS[name].n_heads == MODEL_PRESETS[name].hidden
    # the t4 task: SoS+ demonstrations overflow the t4 context far more often than APR's threads
    from apr_mini.countdown import problem_chunk
    from apr_mini.data import demonstrate_all

    t4 = PROFILES["t4"]
    demos = demonstrate_all(problem_chunk(t4.task, 0, "t4-test", 0, 60), t4.demo, progress=False)
    window = MODEL_PRESETS["t4"].context
    sosp_over = sum(d["sosp"]["tokens"] > window for d in demos) / len(demos)
    apr_over = sum(d["apr"]["stats"]["longest_sequence"] > window for d in demos) / len(demos)
    assert sosp_over > 0.4 and apr_over < 0.15, (sosp_over, apr_over)


def test_splits_are_disjoint_unique_and_independent_of_worker_count():
    train, val = make_splits(TINY.task, 300, 60, seed=3, progress=False)
    keys_train, keys_val = {p.key for p in train}, {p.key for p in val}
    assert len(keys_train) == 300 and len(keys_val) == 60 and not keys_train & keys_val
    again = make_splits(TINY.task, 300, 60, seed=3, workers=2, progress=False)
    assert (train, val) == again


def test_a_test_split_overlaps_neither_and_leaves_the_other_splits_as_they_were():
    train, val = make_splits(TINY.task, 200, 40, seed=3, progress=False)
    train3, val3, test = make_splits(TINY.task, 200, 40, seed=3, progress=False, n_test=50)
    assert (train3, val3) == (train, val) and len(test) == 50
    keys = [{p.key for p in split} for split in (train, val, test)]
    assert not (keys[0] & keys[2] or keys[1] & keys[2]) and len(keys[2]) == 50


def test_exhausted_task_space_is_a_clear_error():
    task = TaskConfig(n_numbers=3, min_number=1, max_number=3, min_target=10, max_target=12)
    with pytest.raises(ValueError, match="distinct solvable problems"):
        unique_problems(task, 100, seed=0, stream="x", progress=False)


def test_demonstrations_are_deterministic_and_copies_reorder_numbers():
    train, _ = make_splits(TINY.task, 20, 5, seed=0, progress=False)
    one = demonstrate_all(train, TINY.demo, traces_per_problem=3, progress=False)
    two = demonstrate_all(train, TINY.demo, traces_per_problem=3, workers=2, progress=False)
    assert one == two and len(one) == 60
    assert sorted(one[1]["nums"]) == sorted(train[0].nums) and one[1]["target"] == train[0].target
    for row in one:
        assert row["apr"]["stats"] == tt.tree_stats(row["apr"]["trace_dict"]).to_dict()


def test_build_dataset_writes_consistent_files(tmp_path):
    profile = TINY.replace(data=TINY.data.__class__(n_train=40, n_val=10, seed=1))
    manifest = build_dataset(profile, tmp_path, progress=False, command="test")
    for name, count in manifest["counts"].items():
        assert len(read_jsonl(tmp_path / f"{name}.jsonl")) == count
    demos = read_jsonl(tmp_path / "demos_train.jsonl")
    rows = read_jsonl(tmp_path / "sft_apr_train.jsonl")
    assert rows == list(sft_rows_apr(demos))
    assert len(rows) == sum(len(list(tt.iter_sequences(d["apr"]["trace_dict"]))) for d in demos)
    sosp = read_jsonl(tmp_path / "sft_sosp_train.jsonl")
    assert all(r["prompt"] + r["completion"] == d["sosp"]["trace"] for r, d in zip(sosp, demos))
    manifest_file = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest_file["profile"]["name"] == "tiny" and manifest_file["command"] == "test"


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(path)


def test_cli_data_and_solve(tmp_path):
    out = tmp_path / "d"
    run = subprocess.run([sys.executable, "-m", "apr_mini", "data", "--profile", "tiny", "--n-train", "30",
                          "--n-val", "5", "--workers", "1", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, check=True)
    assert "solver solves" in run.stdout and (out / "manifest.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("python -m apr_mini data --profile tiny")
    run = subprocess.run([sys.executable, "-m", "apr_mini", "solve", "24", "32", "84", "26", "59"],
                         capture_output=True, text=True, check=True)
    assert "32+59=91, 84*26=2184, 2184/91=24" in run.stdout


def test_budget_prefixes_label_each_demonstration_with_its_own_cost(tmp_path):
    from dataclasses import replace

    profile = TINY.replace(data=TINY.data.__class__(n_train=20, n_val=5, seed=2),
                           demo=replace(TINY.demo, condition="sub_calls", sosp_token_budget=True))
    build_dataset(profile, tmp_path, progress=False, command="test")
    plain = tmp_path / "plain"
    build_dataset(TINY.replace(data=profile.data), plain, progress=False, command="test")
    step = profile.demo.token_budget_step
    for labelled, bare in zip(read_jsonl(tmp_path / "sft_sosp_train.jsonl"), read_jsonl(plain / "sft_sosp_train.jsonl")):
        budget = int(labelled["prompt"].split(" ")[2])
        assert labelled["prompt"] == f"Token Budget: {budget} " + bare["prompt"]
        assert labelled["completion"] == bare["completion"]  # the same search, labelled
        assert budget % step == 0 and budget - step < tl.count_tokens(bare["prompt"] + bare["completion"]) <= budget
    for demo in read_jsonl(tmp_path / "demos_train.jsonl"):
        tree = demo["apr"]["trace_dict"]
        assert tree["main_calls"][0].startswith(f"Sub Call Budget: {tt.tree_stats(tree).n_threads - 1} Moving")


def test_the_committed_deep_task_splits_are_disjoint_and_remade_by_their_command():
    from pathlib import Path

    from apr_mini.data import load_problems

    folder = Path(__file__).resolve().parents[1] / "data" / "countdown-cpu4"
    manifest = json.loads((folder / "manifest.json").read_text())
    splits = {name: load_problems(folder / f"problems_{name}.jsonl") for name in ("train", "val", "test")}
    assert {name: len(s) for name, s in splits.items()} == {
        name: manifest["counts"][f"problems_{name}"] for name in splits}
    keys = {name: {p.key for p in s} for name, s in splits.items()}
    assert not (keys["train"] & keys["val"] or keys["train"] & keys["test"] or keys["val"] & keys["test"])
    deep = PROFILES["cpu4"]
    assert all(len(p.nums) == deep.task.n_numbers for s in splits.values() for p in s)
    assert unique_problems(deep.task, deep.data.n_val, seed=deep.data.seed, stream="val", progress=False) == splits["val"]
