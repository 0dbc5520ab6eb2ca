"""The reproduction of the paper's three claims: statistics, derived points, resume and the summary."""

import dataclasses
import json
import random
import re

import pytest

from apr_mini import claims, plots, results, rl_effects
from apr_mini.config import get_reproduce_config
from apr_mini.countdown import problem_chunk
from apr_mini.demonstrations import sosp_trace
from apr_mini.engine import CONTEXT_FULL, Limits, ScriptedBackend, scripted_from_trees
from apr_mini.inference import fits_window
from apr_mini.stats import bootstrap_difference, bootstrap_mean
from test_engine import TASK


def test_bootstrap_mean_covers_problems_and_seeds():
    one_seed = bootstrap_mean([[1, 0] * 50], rounds=500)
    assert one_seed["mean"] == 0.5 and one_seed["n"] == 100 and one_seed["seed_sd"] is None
    low, high = one_seed["ci95"]
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # about 1.96 x sqrt(0.25 / 100) = 0.098 each side
    same = bootstrap_mean([[1, 1, 0, 0]] * 3, rounds=200)
    assert same["seeds"] == [0.5, 0.5, 0.5] and same["seed_sd"] == 0.0
    spread = bootstrap_mean([[1] * 40, [0] * 40, [1] * 20 + [0] * 20], rounds=500)
    assert spread["mean"] == 0.5 and spread["seed_sd"] == 0.5
    assert spread["ci95"][1] - spread["ci95"][0] > 0.4  # seeds that disagree widen the interval
    assert bootstrap_mean([[1, 1, 1]], rounds=50)["ci95"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_bootstrap_difference_is_paired_over_problems():
    a = [[1] * 60 + [0] * 40]
    assert bootstrap_difference(a, a, rounds=200) == {"difference": 0.0, "ci95": [0.0, 0.0], "n": 100,
                                                               "within_noise": True}
    better = [[1] * 80 + [0] * 20]  # solves every problem `a` does, and 20 more
    diff = bootstrap_difference(better, a, rounds=500)
    assert diff["difference"] == 0.2 and diff["ci95"][0] > 0.1 and not diff["within_noise"]
    noisy = bootstrap_difference([[1, 0] * 50], [[0, 1] * 50], rounds=500)
    assert noisy["within_noise"]
    with pytest.raises(ValueError, match="same problems"):
        bootstrap_difference([[1, 0]], [[1, 0, 1]])


def test_windows_derived_from_a_full_sosp_run_equal_real_runs():
    problems = problem_chunk(TASK, 12, "derive", 0, 12)
    traces = [sosp_trace(p, beam=3, dive_probability=0.5, rng=random.Random(i)) for i, p in enumerate(problems)]
    script = scripted_from_trees({"main_calls": [t], "sub_calls": []} for t in traces)
    full = _run(script, problems, None)
    lengths = sorted(r["metrics"]["longest_sequence"] for r in full)
    for window in (lengths[3], lengths[3] + 1, lengths[6] + 1, lengths[-1] + 1):
        real = _run(script, problems, window)
        assert [fits_window(r, window) for r in full] == [CONTEXT_FULL not in r["metrics"]["failures"] for r in real]
        assert [r["verified"] and fits_window(r, window) for r in full] == [r["verified"] for r in real]
        assert 0 < sum(r["verified"] for r in full)


def _run(script, problems, window):
    from apr_mini.engine import Orchestrator

    engine = Orchestrator(ScriptedBackend(script), Limits(max_depth=0, context=window))
    return sorted(engine.run(enumerate(problems)), key=lambda r: r["id"])


def test_derivation_holds_with_a_real_model_that_samples_eos():
    """A real backend spends a token on EOS: the derived window must count it, as the run does."""
    from apr_mini.inference import open_backend
    from apr_mini.data import load_problems
    from test_backends import CHECKPOINT
    from apr_mini.engine import Orchestrator

    problems = load_problems(CHECKPOINT.parent / "tiny-sosp" / "problems_val.jsonl")[:6]
    backend = open_backend(CHECKPOINT.parent / "tiny-sosp")

    def run(window):
        engine = Orchestrator(backend, Limits(max_depth=0, context=window))
        return sorted(engine.run(enumerate(problems)), key=lambda r: r["id"])

    full = run(640)
    ended = [r["metrics"]["longest_sequence"] for r in full if not r["metrics"]["failures"]]
    assert ended, "the tiny model should end some traces with EOS"
    for window in (max(ended) + 1, max(ended) + 2):  # the trace's text and BOS fit in both; its EOS only in the second
        real = run(window)
        assert [fits_window(r, window) for r in full] == [not r["metrics"]["failures"] for r in real]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reproduce")
    config = get_reproduce_config("tiny", out=str(folder / "results"), records=str(folder / "records"), n_problems=4)
    summary = results.reproduce(config, progress=False, command="test", figures=True)
    return config, summary


def test_summary_schema(tiny):
    config, summary = tiny
    assert set(summary) >= {"command", "config", "models", "missing", "paper", "claims", "derivation_check", "rl",
                            "context", "compute", "latency", "seconds_this_session"}
    assert json.loads((results.Path(config.out) / "summary.json").read_text())["command"] == "test"
    for name in ("context", "compute", "latency", "budgets"):
        assert (results.Path(config.out) / f"{name}.html").exists()
        if plots.find_browser():
            assert (results.Path(config.out) / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for point in summary["context"] + summary["compute"] + summary["latency"]:
        assert {"role", "label", "method", "name", "stat", "accuracy", "ci95", "seed_accuracies", "n", "seeds",
                "outcomes"} <= set(point)
        assert point["n"] == 4 and len(point["outcomes"]) == point["seeds"]
        assert point["ci95"][0] <= point["accuracy"] <= point["ci95"][1]
    windows = {(p["role"], p["window"]): p for p in summary["context"]}
    assert set(windows) == {(r, w) for r in ("sosp_sft", "apr_sft", "sosp_room") for w in config.windows} | {
        ("sosp_room", config.room_window)}  # SoS+ with room: derived at the shared windows, run at its own
    assert windows[("sosp_sft", 256)]["derived"] and not windows[("apr_sft", 256)]["derived"]
    check = summary["derivation_check"]
    assert check["window"] == 256 and check["agree"] == check["n"] == 4
    series = {p["series"] for p in summary["compute"]}
    assert {"SoS+ pass@k", "SoS+ majority@k", "APR majority@k", "SoS+ token budget", "APR sub-call budget"} <= series
    for point in summary["latency"]:
        assert point["latency_alone_s"] > 0 and point["floor_s"] > 0 and len(point["latency_rounds"]) == 2
    assert [row["claim"] for row in summary["claims"]["rows"]] == ["context"] * (len(config.windows) - 1) + ["compute", "latency"]
    assert "data/cpu-sosp" not in summary["missing"] and summary["missing"] == []
    assert "| context |" in claims.claims_markdown(summary)
    assert (results.Path(config.out) / "claims.md").read_text() == claims.claims_markdown(summary) + "\n"
    assert set(summary["losses"]) == {"sosp_sft", "apr_sft", "sosp_room"}  # one table per seed, every problem once
    goal = summary["claims"]["latency_goal"]
    assert {p["label"] for p in goal["sosp"]} == {"SoS+", "SoS+ with room"} and goal["rounds"] == 2
    assert goal["most_accurate_sosp"] in {"SoS+", "SoS+ with room"} and isinstance(goal["met"], bool)
    assert "Latency goal" in claims.claims_markdown(summary)
    for tables in summary["losses"].values():
        assert len(tables) == 1 and tables[0]["n"] == 4


@pytest.mark.parametrize("marker,folder,n_images", [("claims table", "results", 4), ("deep claims table", "results-cpu4", 3)])
def test_the_readme_claims_blocks_are_the_shipped_summaries(marker, folder, n_images):
    """The README's tables are what ``reproduce`` wrote from each task's summary.json, not typed in."""
    root = results.Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split(f"<!-- {marker} -->\n", 1)[1].split(f"\n<!-- /{marker} -->", 1)[0]
    summary = json.loads((root / "data" / folder / "summary.json").read_text())
    assert block == claims.claims_markdown(summary), f"paste data/{folder}/claims.md into the README's {marker} block"
    images = re.findall(rf"!\[[^\]]*\]\((data/{folder}/[^)]+\.png)\)", readme)
    assert len(images) == n_images and all((root / image).stat().st_size > 10_000 for image in images)


def test_reproduce_resumes_without_redoing_work(tiny, monkeypatch):
    config, first = tiny
    from apr_mini import inference

    def no_model(*args, **kwargs):
        raise AssertionError("a finished reproduction must not load a model again")

    monkeypatch.setattr(inference, "open_backend", no_model)
    again = results.reproduce(config, progress=False, command="test", figures=False)
    assert again["context"] == first["context"] and again["compute"] == first["compute"]
    monkeypatch.undo()
    path = results.Path(config.records) / "apr_sft-seed0" / "window-384.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # a run killed before its last problem
    loads = []
    real_open = inference.open_backend
    monkeypatch.setattr(inference, "open_backend", lambda *a, **k: loads.append(a) or real_open(*a, **k))
    resumed = results.reproduce(config, progress=False, command="test", figures=False)
    assert len(loads) == 1 and len(path.read_text().splitlines()) == len(lines)
    outcomes = lambda summary: [(p["name"], p["outcomes"], p.get("total_tokens")) for p in summary["context"]]
    assert outcomes(resumed) == outcomes(first)  # the redone problem's latency may differ
    path.write_text("\n".join(lines[:-1]) + "\n")
    loads.clear()
    assert results.reproduce(config, progress=False, only=("sosp_sft",)) is None
    assert loads == [] and len(path.read_text().splitlines()) == len(lines) - 1  # --only: that role's runs alone
    assert results.reproduce(config, progress=False, only=("apr_sft",)) is None
    assert len(loads) == 1 and len(path.read_text().splitlines()) == len(lines)
    with pytest.raises(results.UserFacingError, match="unknown role"):
        results.reproduce(config, progress=False, only=("apr",))


def test_missing_checkpoints_are_reported_not_fatal(tmp_path):
    config = get_reproduce_config("tiny", out=str(tmp_path / "r"), records=str(tmp_path / "rec"), n_problems=2,
                                  apr_budget=("data/no-such-model",), sosp_budget=(), ks=(1,), latency_rounds=1)
    summary = results.reproduce(config, progress=False, figures=False)
    assert summary["missing"] == ["data/no-such-model"]
    assert claims.claims_markdown(summary).endswith("Not evaluated: data/no-such-model.")
    assert not any(p["role"] == "apr_budget" for p in summary["compute"])
    with pytest.raises(results.UserFacingError, match="SFT models"):
        results.reproduce(get_reproduce_config("tiny", sosp_sft=("data/nothing",)), progress=False)


def test_reproduce_command_prints_the_claims_table(tmp_path, capsys):
    from apr_mini.__main__ import main

    main(["reproduce", "--profile", "tiny", "--n", "2", "--out", str(tmp_path / "r"), "--records",
          str(tmp_path / "rec"), "--no-progress", "--threads", "1"])
    printed = capsys.readouterr().out
    assert "| claim | paper: APR / SoS+ |" in printed and "summary.json" in printed
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["command"].startswith("python -m apr_mini")


def test_the_latency_floor_counts_decoded_tokens_on_the_critical_path():
    child = lambda new: {"calls": [{"new_tokens": new}], "sub_calls": []}
    # the root decodes 10, waits for its slowest child (7 of 3 and 7), then decodes 4 more after the join
    tree = {"calls": [{"new_tokens": 10}, {"new_tokens": 4}], "sub_calls": [[child(3), child(7)]]}
    assert claims.decoded_path(tree) == 10 + 7 + 4
    assert claims.decoded_path(child(5)) == 5


def test_rl_pairs_each_grpo_model_with_the_sft_seed_it_started_from(tmp_path):
    """Before/after is per (SFT seed, GRPO run started from it), matched by the weights' fingerprint,
    and the interval resamples those pairs and the problems."""
    config = get_reproduce_config("tiny", records=str(tmp_path / "records"), bootstrap=300)
    models = {"sosp_sft": ["sft-a", "sft-b"], "sosp_grpo": ["grpo-from-b", "grpo-from-nowhere"],
              "apr_sft": ["apr"], "apr_grpo": []}
    fingerprints = {name: f"{name} 0123" for names in models.values() for name in names}
    for grpo, source in (("grpo-from-b", "sft-b 0123"), ("grpo-from-nowhere", "elsewhere 4567")):
        (tmp_path / grpo).mkdir()
        (tmp_path / grpo / "metrics.json").write_text(json.dumps({"source_fingerprint": source}))
    models = {role: [str(tmp_path / c) if "grpo" in c else c for c in cs] for role, cs in models.items()}
    fingerprints.update({str(tmp_path / c): f for c, f in fingerprints.items() if "grpo" in c})
    assert rl_effects.grpo_pairs(models, fingerprints, "sosp_sft", "sosp_grpo") == [(1, 0)]
    assert rl_effects.grpo_pairs(models, fingerprints, "apr_sft", "apr_grpo") == []

    def write(role, seed, verified, tokens):
        run = results.Run(role, seed, f"window-{config.windows[-1]}", None, len(verified))
        path = results.records_path(config, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = {"total_tokens": tokens, "longest_sequence": tokens, "critical_path": tokens, "n_threads": 1,
                   "spawn_depth": 0, "latency_s": 0.1, "prefill_tokens": 0, "decode_tokens": tokens, "failures": []}
        path.write_text("".join(json.dumps({"id": i, "sample": 0, "verified": v, "result": None, "metrics": metrics})
                                + "\n" for i, v in enumerate(verified)))
        return run

    runs = [write("sosp_sft", 0, [1] * 20, 100), write("sosp_sft", 1, ([0] * 5 + [1] * 5) * 2, 100),
            write("sosp_grpo", 0, ([1] * 3 + [0] * 2 + [1] * 5) * 2, 90)]  # 6 problems gained, none lost
    rl = rl_effects.rl_changes(config, lambda role, seed, name: results.load_records(config, results._find(runs, role, seed, name)),
                    models, fingerprints)
    assert set(rl) == {"sosp"}  # seed 0's SFT model (all solved) is not what the GRPO run started from
    accuracy = rl["sosp"]["accuracy"]
    assert (accuracy["before"], accuracy["after"], accuracy["difference"], accuracy["pairs"]) == (0.5, 0.8, 0.3, 1)
    assert accuracy["ci95"][0] > 0 and not accuracy["within_noise"]
    assert rl["sosp"]["relative_change_percent"] == {"children": None, "longest_sequence": -10.0, "total_tokens": -10.0}
    assert rl["sosp"]["per_seed"][0]["gained"] == 6 and rl["sosp"]["per_seed"][0]["lost"] == 0


def test_rl_at_a_fixed_number_of_children_compares_each_budget_before_and_after(tmp_path):
    """The fixed-children comparison: a sub-call budget model and its GRPO run (started from it), at
    every budget, paired; a budget model with no GRPO run gives no row, and the timed rounds leave
    the GRPO budget model out (claim 3 times the SFT models only)."""
    config = get_reproduce_config("tiny", records=str(tmp_path / "records"), bootstrap=300)
    grpo = tmp_path / "budget-grpo"
    grpo.mkdir()
    (grpo / "metrics.json").write_text(json.dumps({"source_fingerprint": "budget 0123"}))
    models = {"apr_budget": ["budget"], "apr_budget_grpo": [str(grpo)]}
    fingerprints = {"budget": "budget 0123", str(grpo): "grpo 4567"}
    outcomes = {("apr_budget", 2): [1, 0] * 5, ("apr_budget_grpo", 2): [1, 0] * 5,   # no change at 2 children
                ("apr_budget", 4): [1, 0] * 5, ("apr_budget_grpo", 4): [1, 1] * 5}   # +50 points at 4
    records = {}
    for (role, budget), verified in outcomes.items():
        metrics = {"total_tokens": 100, "longest_sequence": 50, "critical_path": 60, "children": budget,
                   "n_threads": budget + 1, "spawn_depth": 1, "latency_s": 0.1, "prefill_tokens": 0,
                   "decode_tokens": 100, "failures": []}
        records[(role, 0, f"budget-{budget}")] = [{"id": i, "sample": 0, "verified": v, "result": None,
                                                   "metrics": metrics} for i, v in enumerate(verified)]
    fixed = rl_effects.rl_fixed_children(config, lambda role, seed, name: records[(role, seed, name)], models, fingerprints)
    assert set(fixed) == {"2", "4"}
    assert fixed["2"]["accuracy"]["difference"] == 0 and fixed["2"]["accuracy"]["within_noise"]
    assert fixed["4"]["accuracy"]["difference"] == 0.5 and not fixed["4"]["accuracy"]["within_noise"]
    sentence = rl_effects.fixed_children_sentence(fixed)
    assert "2 children 50.0% -> 50.0% (+0.0" in sentence and "within noise" in sentence
    assert "4 children 50.0% -> 100.0% (+50.0" in sentence
    assert rl_effects.rl_fixed_children(config, lambda *a: [], {"apr_budget": ["budget"], "apr_budget_grpo": []},
                                        fingerprints) == {}
    # the deep task's engine-fixed width: the APR SFT model and its GRPO run, runs named width-N
    widths = {(role.replace("budget_grpo", "grpo").replace("budget", "sft"), 0, name.replace("budget", "width")): rows
              for (role, _, name), rows in records.items()}
    deep = rl_effects.rl_fixed_children(config, lambda role, seed, name: widths[(role, seed, name)],
                                        {"apr_sft": ["budget"], "apr_grpo": [str(grpo)]}, fingerprints, widths=(2, 4))
    assert {w: change["accuracy"]["difference"] for w, change in deep.items()} == {"2": 0, "4": 0.5}
    assert "the engine" in rl_effects.fixed_children_sentence(deep, "the engine running N children")

    plan = results.plan(config, {"apr_budget": ["budget"], "apr_budget_grpo": [str(grpo)]})
    assert {r.name for r in plan if r.role == "apr_budget_grpo"} == {"budget-2", "budget-4"}
    assert {r.role for r in results.latency_plan(config, plan)} == {"apr_budget"}
    budget_untimed = dataclasses.replace(config, timed_roles=("apr_grpo",))
    assert results.latency_plan(budget_untimed, plan) == []
    with pytest.raises(ValueError, match="timed_roles"):
        dataclasses.replace(config, timed_roles=("apr_sft", "apr_rl"))


def test_redraw_rewrites_the_block_and_figures_from_the_summary_alone(tmp_path, capsys):
    from apr_mini.__main__ import main

    summary = json.loads((results.Path(__file__).resolve().parent.parent / "data" / "results" / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    main(["reproduce", "--profile", "tiny", "--out", str(tmp_path), "--redraw"])
    assert (tmp_path / "claims.md").read_text() == claims.claims_markdown(summary) + "\n"
    assert {"context.html", "compute.html", "latency.html", "budgets.html"} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(SystemExit):
        main(["reproduce", "--profile", "tiny", "--out", str(tmp_path / "empty"), "--redraw"])
    assert "summary.json to redraw" in capsys.readouterr().err


def test_depth_sets_each_claim_side_by_side_on_both_tasks(tiny, tmp_path):
    """The depth figure's rows come from the two tasks' summaries: one per claim and task, each the
    claim's headline row (context at the models' own window after SFT)."""
    import dataclasses

    config, summary = tiny
    deep = dataclasses.replace(config, task="4 numbers", contrast=str(results.Path(config.out) / "summary.json"))
    copy = json.loads(json.dumps(summary))
    results.attach_depth(deep, copy)
    headline = {r["claim"]: r for r in summary["claims"]["rows"] if "the models' own" in r["setting"] or r["claim"] != "context"}
    assert {(r["task"], r["claim"]) for r in copy["depth"]} == {(t, c) for t in ("3 numbers", "4 numbers") for c in headline}
    for row in copy["depth"]:
        assert row["difference"] == headline[row["claim"]]["difference"]["difference"]
    assert "| context |" in claims.depth_markdown(copy["depth"]) and "Depth:" in claims.claims_markdown(copy)
    assert "depth" in plots.claim_figures(copy)
    alone = dict(summary)
    results.attach_depth(dataclasses.replace(deep, contrast=str(tmp_path / "none.json")), alone)
    assert "depth" not in alone  # no contrast summary: no depth figure


def test_a_side_measured_beyond_the_limit_is_said_so_not_called_unmeasured():
    """APR slower alone than SoS+'s latency: the row, the depth table and the figure say it was measured
    and had no point within the limit (the deep task's latency row)."""
    sosp = {"label": "SoS+", "method": "sosp", "accuracy": 0.04, "ci95": [0.01, 0.08], "seeds": 1, "n": 100,
            "latency_alone_s": 5.8}
    apr = {"label": "APR", "method": "apr", "accuracy": 0.25, "ci95": [0.17, 0.33], "seeds": 1, "n": 100,
           "latency_alone_s": 9.33}
    config = get_reproduce_config("tiny")
    row = claims._claim(config, "latency", "at most 5.80 s per problem", None, sosp,
                        claims._cheapest([sosp, apr], "latency_alone_s"))
    assert row["apr_cheapest"] == 9.33 and "sosp_cheapest" not in row and "difference" not in row
    depth = claims.depth_rows({"4 numbers": {"claims": {"rows": [row]}}})
    assert depth == [{"task": "4 numbers", "claim": "latency", "setting": "at most 5.80 s per problem",
                      "difference": None, "why": "no APR point within the limit (its fastest 9.33 s)"}]
    assert "no APR point within the limit (its fastest 9.33 s)" in claims.depth_markdown(depth)
    assert plots.depth_figure(depth).data[0].y == ()
