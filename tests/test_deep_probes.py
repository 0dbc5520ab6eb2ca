"""experiments/deep_probes.py: the deep task's probe table, from each probe's curve and command."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "deep_probes.py"


def load_script():
    spec = importlib.util.spec_from_file_location("deep_probes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_has_a_row_per_curve_point_with_children_for_apr(tmp_path):
    probes = load_script()
    for name, kind, point in (
            ("apr-warm", "apr", {"engine_verified": 0.05, "verified": 0.0, "spawn_rate": 0.85, "children_solvable": 17,
                                 "children_solved_of_solvable": 0.1176}),
            ("sosp-warm", "sosp", {"verified": 0.1})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"run": {"kind": kind, "init": f"data/cpu-{kind}"}}))
        (folder / "curve.jsonl").write_text(json.dumps({"tokens": 4e6, "n": 20, "finished": 0.5, **point}) + "\n")
    table = probes.markdown(probes.rows(tmp_path))
    assert "| apr-warm | data/cpu-apr | 4.0M | 20 | 1/20 | 50% | 85% | 12% (of 17) |" in table
    assert "| sosp-warm | data/cpu-sosp | 4.0M | 20 | 2/20 | 50% | - | - |" in table


def test_the_ceilings_count_only_searches_that_solve_within_the_window():
    probes = load_script()
    demos = [{"sosp": {"tokens": 1000, "solved": True}, "apr": {"solved": True, "stats": {"longest_sequence": 900}}},
             {"sosp": {"tokens": 3000, "solved": True}, "apr": {"solved": False, "stats": {"longest_sequence": 800}}}]
    table = probes.ceilings(demos, windows=(1536, 4096))
    assert "| 1,536 | 50.0% | 50.0% | 50.0% |" in table and "| 4,096 | 100.0% | 100.0% | 50.0% |" in table
