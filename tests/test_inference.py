"""Evaluation runs: JSONL written as problems finish, resumed after a kill, and summarized."""

import json
import random
from pathlib import Path

import pytest

from apr_mini.countdown import problem_chunk
from apr_mini.demonstrations import apr_tree
from apr_mini.engine import Limits, ScriptedBackend, scripted_from_trees
from apr_mini.inference import (EvalSettings, ResumeMismatch, checkpoint_fingerprint, run_eval, smaller_contexts,
                                solution_key, summarize, summary_table)
from test_engine import TASK, bare

ROOT = Path(__file__).resolve().parent.parent


class Killed(Exception):
    pass


class KilledAfter(ScriptedBackend):
    """A scripted backend that dies (like a killed process, or raising ``error``) after some steps."""

    def __init__(self, script, steps, error=Killed):
        super().__init__(script)
        self.steps_left, self.error = steps, error

    def step(self, requests):
        self.steps_left -= 1
        if self.steps_left < 0:
            raise self.error("the backend went away")
        return super().step(requests)


@pytest.fixture
def demos():
    problems = problem_chunk(TASK, 9, "infer", 0, 10)
    trees = [apr_tree(p, beam=3, sub_beam=4, spawn_probability=1.0, rng=random.Random(i)) for i, p in enumerate(problems)]
    return problems, trees


def test_a_killed_run_keeps_finished_problems_and_resumes_without_redoing_them(demos, tmp_path):
    problems, trees = demos
    script = scripted_from_trees(trees)
    full = ScriptedBackend(script)
    run_eval(full, problems, tmp_path / "full.jsonl", progress=False)
    out = tmp_path / "apr.jsonl"
    with pytest.raises(Killed):
        run_eval(KilledAfter(script, len(full.batch_sizes) // 2), problems, out, progress=False)
    finished = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(finished) < len(problems)
    backend = ScriptedBackend(script)
    records = run_eval(backend, problems, out, progress=False)
    assert [r["id"] for r in records] == list(range(len(problems)))
    assert [bare(r["tree"]) for r in records] == trees
    roots_rerun = sum(1 for key in backend.released if key[1] == "root")
    assert roots_rerun == len(problems) - len(finished)
    with pytest.raises(ValueError, match="other settings"):
        run_eval(ScriptedBackend(script), problems, out, EvalSettings(seed=1), progress=False)


def test_sosp_method_forbids_spawning_and_samples_need_a_temperature(demos, tmp_path):
    problems, trees = demos
    records = run_eval(ScriptedBackend(scripted_from_trees(trees)), problems[:3], tmp_path / "s.jsonl",
                       EvalSettings(method="sosp", limits=Limits(max_depth=3)), progress=False)
    assert all(r["metrics"]["n_threads"] == 1 for r in records)
    with pytest.raises(ValueError, match="temperature"):
        EvalSettings(samples=4)


def test_a_run_is_not_resumed_with_another_model(demos, tmp_path):
    from test_backends import CHECKPOINT

    problems, trees = demos
    backend = ScriptedBackend(scripted_from_trees(trees))
    run_eval(backend, problems[:2], tmp_path / "r.jsonl", progress=False, model="model A")
    with pytest.raises(ResumeMismatch):
        run_eval(backend, problems[:2], tmp_path / "r.jsonl", progress=False, model="model B")
    assert checkpoint_fingerprint(CHECKPOINT).startswith(CHECKPOINT.name + " ")
    assert checkpoint_fingerprint(CHECKPOINT) != checkpoint_fingerprint(tmp_path)


def record(pid, sample, result, verified, tokens=10):
    metrics = {"total_tokens": tokens, "longest_sequence": tokens, "critical_path": tokens, "n_threads": 1,
               "spawn_depth": 0, "latency_s": 0.1, "prefill_tokens": 5, "decode_tokens": tokens, "failures": []}
    tree = {"main_calls": ["..."], "sub_calls": [], "calls": [{"prompt_tokens": 1, "new_tokens": tokens}]}  # BOS + tokens
    return {"id": pid, "sample": sample, "result": result, "verified": verified, "metrics": metrics, "tree": tree}


def test_summary_reports_first_sample_pass_at_n_and_majority_vote():
    good = "Exploring Operation: 3*4=12, Resulting Numbers: [12]\n12,12 equal: Goal Reached"
    bad = "Exploring Operation: 3+4=7, Resulting Numbers: [7]\n7,12 equal: Goal Reached"
    assert solution_key(good) == "3*4=12" and solution_key(None) is None and solution_key("no path") is None
    records = [record(0, 0, bad, False), record(0, 1, good, True), record(0, 2, bad, False),   # vote: wrong
               record(1, 0, good, True), record(1, 1, good, True), record(1, 2, None, False)]  # vote: right
    summary = summarize(records)
    assert summary["problems"] == 2 and summary["samples"] == 3
    assert summary["accuracy"] == 0.5 and summary["pass_at_n"] == 1.0 and summary["majority"] == 0.5
    assert summary["total_tokens"] == 30
    assert "| run |" in summary_table({"x": summary})


def test_smaller_contexts_count_first_samples_that_verified_and_fit():
    records = [record(0, 0, "r", True, tokens=300), record(0, 1, "r", True, tokens=100),   # only sample 0 counts
               record(1, 0, "r", True, tokens=700), record(2, 0, "r", False, tokens=100),
               record(3, 0, "r", True, tokens=639)]
    report = smaller_contexts(records, [256, 640, 1024])
    assert {w: r["verified"] for w, r in report.items()} == {256: 0.0, 640: 0.5, 1024: 0.75}
    assert {w: r["longer"] for w, r in report.items()} == {256: 0.75, 640: 0.25, 1024: 0.0}
    records[2]["metrics"]["failures"] = ["context window full"]  # cut off by the run's own context
    assert smaller_contexts(records, [1024])[1024]["longer"] == 0.25


def test_infer_command_writes_records_and_a_summary(tmp_path, capsys):
    from apr_mini.__main__ import main
    from test_backends import CHECKPOINT

    out = tmp_path / "apr.jsonl"
    main(["infer", "--checkpoint", str(CHECKPOINT), "--method", "apr", "--problems",
          str(CHECKPOINT / "problems_val.jsonl"), "--n", "2", "--max-thread-tokens", "200", "--out", str(out),
          "--no-progress", "--within", "256", "1024"])
    assert len(out.read_text().splitlines()) == 2
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["problems"] == 2 and set(summary["smaller_contexts"]) == {"256", "1024"}
    printed = capsys.readouterr().out
    assert "| tiny-apr apr |" in printed and "| 256 |" in printed


def test_infer_default_output_keeps_greedy_and_sampled_runs_apart(tmp_path, monkeypatch):
    from apr_mini.__main__ import main
    from test_backends import CHECKPOINT

    monkeypatch.chdir(tmp_path)
    common = ["infer", "--checkpoint", str(CHECKPOINT), "--method", "apr", "--problems",
              str(CHECKPOINT / "problems_val.jsonl"), "--n", "1", "--max-thread-tokens", "100", "--no-progress"]
    main(common)
    main(common + ["--samples", "2", "--temperature", "1.0"])  # would be refused as a resume of the greedy file
    assert {p.name for p in (tmp_path / "runs" / "infer").glob("*.jsonl")} == {"tiny-apr-apr.jsonl", "tiny-apr-apr-s2.jsonl"}


def test_paired_difference_on_hand_made_records_and_where_shipped_ones_lose(tmp_path, capsys):
    from apr_mini.__main__ import main
    from apr_mini.attribution import loss_attribution
    from apr_mini.data import read_jsonl
    from apr_mini.stats import paired_difference

    before = [{"id": i, "sample": 0, "verified": v} for i, v in enumerate([1, 0, 0, 1, 0])]
    after = [{"id": i, "sample": 0, "verified": v} for i, v in enumerate([1, 1, 0, 1, 1])] + [{"id": 9, "verified": 1}]
    d = paired_difference(before, after)
    assert (d["n"], d["before"], d["after"], d["difference"], d["gained"], d["lost"]) == (5, 0.4, 0.8, 0.4, 2, 0)
    # after - before per problem: 0, 1, 0, 0, 1; mean 0.4, sample variance 0.3
    assert d["se"] == pytest.approx((0.3 / 5) ** 0.5, abs=1e-4)
    assert d["ci95"] == pytest.approx([0.4 - 1.96 * d["se"], 0.4 + 1.96 * d["se"]], abs=1e-3)
    for name, records in (("a", before), ("b", after)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    main(["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    assert "on 5 shared problems: 80.0% - 40.0% = +40.0%" in capsys.readouterr().out
    main(["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    assert "where each loses" not in capsys.readouterr().out  # no trees, no causes

    shipped = ROOT / "data" / "cpu-apr-grpo"
    main(["compare", str(shipped / "eval_before.jsonl"), str(shipped / "eval_after.jsonl")])
    before_causes, after_causes = (loss_attribution(read_jsonl(shipped / f"eval_{name}.jsonl")) for name in ("before", "after"))
    assert (f"no solvable child {before_causes['no solvable child']} -> {after_causes['no solvable child']}, "
            f"child missed {before_causes['child missed']} -> {after_causes['child missed']}") in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "missing.jsonl")])
    assert exit_info.value.code == 2
