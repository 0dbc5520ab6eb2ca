"""The sweep's report: one curve point per step, finished or not, and a fair comparison near 7.5M tokens."""

import importlib.util
import json
from pathlib import Path

from apr_mini import models

SWEEP_SCRIPT = Path(__file__).parents[1] / "experiments" / "sft_sweep.py"


def load_sweep(monkeypatch):
    # the script adds its 1,024-context presets to MODEL_PRESETS on import; keep them out of other tests
    monkeypatch.setattr(models, "MODEL_PRESETS", dict(models.MODEL_PRESETS))
    spec = importlib.util.spec_from_file_location("sft_sweep", SWEEP_SCRIPT)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    return sweep


def write_curve(folder: Path, points: list[tuple[int, int, float]]) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": s, "tokens": t, "loss": 0.1, "verified": v}) for s, t, v in points]
    (folder / "curve.jsonl").write_text("\n".join(lines) + "\n")


def test_report_dedupes_steps_and_compares_points_near_7_5m(tmp_path, monkeypatch, capsys):
    sweep = load_sweep(monkeypatch)
    monkeypatch.setattr(sweep, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(sweep, "RESULTS", tmp_path / "results.json")
    # base evaluated its last step twice (stopped and resumed there) and finished
    write_curve(tmp_path / "runs" / "base", [(1, 6_222_455, 0.19), (2, 7_472_353, 0.29), (2, 7_472_353, 0.29)])
    (tmp_path / "runs" / "base" / "metrics.json").write_text(json.dumps({"parameters": 1000, "final_loss": 0.061}))
    # a later point ran on to 8M; the 4-number one stopped at 6.2M and is still running
    write_curve(tmp_path / "runs" / "data-500", [(1, 7_469_168, 0.27), (2, 7_998_419, 0.32)])
    write_curve(tmp_path / "runs" / "4-numbers", [(1, 6_239_729, 0.0)])

    results = sweep.report()

    by_name = {p["point"]: p for p in results["points"]}
    assert len(by_name["base"]["curve"]) == 2 and by_name["base"]["finished"]
    assert by_name["data-500"]["verified"] == 0.32 and by_name["data-500"]["verified_at_7.5M"] == 0.27
    assert by_name["4-numbers"]["verified_at_7.5M"] is None and not by_name["4-numbers"]["finished"]
    assert json.loads((tmp_path / "results.json").read_text()) == results
    table = capsys.readouterr().out
    assert "| base |" in table and "no curve point" in table
