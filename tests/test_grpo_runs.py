"""The GRPO runs' report: finished, collapsed and stopped runs, each read from its curve."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "experiments" / "grpo_runs.py"


def load_script():
    spec = importlib.util.spec_from_file_location("grpo_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, points: list[dict], finished: bool) -> None:
    folder.mkdir(parents=True)
    (folder / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    if finished:
        (folder / "metrics.json").write_text(json.dumps({"wall_seconds": 600}))


def point(step: int, well_formed: float = 1.0, accuracy: float | None = None) -> dict:
    p = {"step": step} if step == 0 else {"step": step, "well_formed": well_formed, "kl": 0.01 * step}
    if accuracy is not None:
        p["eval"] = {"accuracy": accuracy, "children": 5.0, "critical_path": 500.0, "total_tokens": 900.0}
    return p


def test_report_reads_finished_collapsed_and_stopped_runs(tmp_path, monkeypatch, capsys):
    runs = load_script()
    monkeypatch.setattr(runs, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(runs, "POINTS", {
        "done": ("nothing", "apr", str(tmp_path / "done"), {}),
        "collapsed": ("lr", "apr", str(tmp_path / "collapsed"), {}),
        "stopped": ("beta", "apr", str(tmp_path / "stopped"), {}),
        "not-run": ("reward", "apr", str(tmp_path / "not-run"), {}),
    })
    write_run(tmp_path / "done", [point(0, accuracy=0.5), point(1), point(2, accuracy=0.6)], finished=True)
    write_run(tmp_path / "collapsed", [point(0, accuracy=0.5), point(1, accuracy=0.4), point(2, 0.3)], finished=False)
    write_run(tmp_path / "stopped", [point(0, accuracy=0.5), point(1, 0.9)], finished=False)

    rows = {r["run"]: r for r in runs.report()}

    assert set(rows) == {"done", "collapsed", "stopped"}
    assert rows["done"]["status"] == "finished" and rows["done"]["wall_minutes"] == 10.0
    assert (rows["done"]["accuracy_before"], rows["done"]["accuracy_after"]) == (0.5, 0.6)
    assert rows["collapsed"]["status"] == "collapsed at step 2" and rows["collapsed"]["last_eval_step"] == 1
    assert rows["stopped"]["status"] == "stopped at step 1" and rows["stopped"]["accuracy_after"] == 0.5
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["run"] for r in saved["runs"]] == ["done", "collapsed", "stopped"]
    assert len(saved["curves"]["done"]) == 3
    assert "| done | nothing | finished | 50% -> 60% (2) |" in capsys.readouterr().out
