"""experiments/deep_validation.py: the deep GRPO pairs on the whole validation split, sliced."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("deep_validation", ROOT / "experiments" / "deep_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_slices_split_the_problems_at_the_judged_count():
    script = load_script()
    before = [{"id": i, "sample": 0, "verified": v} for i, v in enumerate([1, 1, 0, 0, 0, 1])]
    after = [{"id": i, "sample": 0, "verified": v} for i, v in enumerate([0, 1, 1, 1, 0, 1])]
    parts = script.slices(before, after, judged=2)
    assert parts["all"]["n"] == 6 and parts["all"]["difference"] == round(1 / 6, 4)
    assert (parts["first 2"]["n"], parts["first 2"]["difference"], parts["first 2"]["lost"]) == (2, -0.5, 1)
    assert (parts["rest"]["n"], parts["rest"]["difference"], parts["rest"]["gained"]) == (4, 0.5, 2)


def test_the_committed_report_holds_the_scripts_pairs_on_the_whole_split():
    script = load_script()
    report = json.loads(script.OUT.read_text())
    assert set(report["pairs"]) == set(script.SHIPPED) | set(script.CANDIDATES)
    for name, pair in report["pairs"].items():
        assert (pair["sft"], pair["grpo"]) == {**script.SHIPPED, **script.CANDIDATES}[name]
        whole, first, rest = pair["all"], pair[f"first {script.JUDGED}"], pair["rest"]
        assert whole["n"] == report["n"] == first["n"] + rest["n"] and first["n"] == script.JUDGED
        # the slices add up to the whole: accuracies are shares of the same problems
        assert abs(whole["after"] * whole["n"] - first["after"] * first["n"] - rest["after"] * rest["n"]) < 0.01
