"""Figures: one colour per method everywhere, readable axes, and a renderer that survives HTML export."""

import json
from pathlib import Path

import plotly.io as pio
import pytest

from apr_mini import plots
from apr_mini.config import get_profile, print_environment
from apr_mini.renderer import COLAB_RENDERER, NOTEBOOK_RENDERER, notebook_renderer


def record(pid, verified, tokens):
    metrics = {"total_tokens": tokens, "longest_sequence": tokens, "critical_path": tokens, "n_threads": 1,
               "spawn_depth": 0, "latency_s": 0.5, "prefill_tokens": 5, "decode_tokens": tokens, "failures": []}
    return {"id": pid, "sample": 0, "result": None, "verified": verified, "metrics": metrics}


def test_method_colors_are_shared():
    assert plots.method_color("SoS+ GRPO") == plots.method_color("sosp-binary") == plots.METHOD_COLORS["SoS+"]
    assert plots.method_color("APR sub-call budget") == plots.METHOD_COLORS["APR"]
    assert plots.method_color("solver") is None


def test_method_comparison_has_an_accuracy_axis_from_0_to_1_and_a_colour_per_method():
    records = {"SoS+": [record(i, i % 2 == 0, 500) for i in range(10)],
               "APR": [record(i, i % 3 != 0, 900) for i in range(10)]}
    fig = plots.method_comparison_figure(records)
    assert tuple(fig.layout.yaxis.range) == (0, 1)
    accuracy = [t for t in fig.data if t.xaxis == "x"]
    assert [t.marker.color for t in accuracy] == [plots.METHOD_COLORS["SoS+"], plots.METHOD_COLORS["APR"]]
    assert accuracy[0].text == ("5/10",) and accuracy[0].error_y.array is not None
    assert [a.text for a in fig.layout.annotations][0] == "accuracy (verified)"


def test_the_fixed_children_figure_puts_each_task_on_the_same_widths_with_its_interval():
    def change(difference):
        return {"accuracy": {"before": 0.5, "after": 0.5 + difference, "difference": difference,
                             "ci95": [difference - 0.05, difference + 0.1], "n": 100}}

    shallow = {"fixed_children": {"3": change(0.07), "6": change(0.0)}, "free_spawning": change(0.06)}
    deep = {"fixed_children": {"3": change(-0.01)}, "free_spawning": None}
    fig = plots.fixed_children_figure({"3 numbers": shallow, "4 numbers": deep})
    assert [trace.x for trace in fig.data] == [("3 fixed", "6 fixed", "free"), ("3 fixed",)]
    assert fig.data[0].error_y.array == pytest.approx((0.1, 0.1, 0.1))
    assert fig.data[1].error_y.arrayminus == pytest.approx((0.05,))
    assert fig.layout.yaxis.tickformat == "+.0%"


def test_the_notebooks_first_cell_picks_a_renderer_that_embeds_plotly(capsys):
    pio.renderers.default = "json"
    print_environment(get_profile("tiny"))
    assert pio.renderers.default == NOTEBOOK_RENDERER and "notebook" in NOTEBOOK_RENDERER.split("+")


def test_on_colab_the_figures_use_plotlys_colab_renderer(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert notebook_renderer() == COLAB_RENDERER and COLAB_RENDERER in pio.renderers


def test_claim_figures_are_written_as_html_and_a_stale_png_is_removed_when_none_can_be_drawn(tmp_path, monkeypatch):
    summary = json.loads((Path(__file__).resolve().parent.parent / "data" / "results" / "summary.json").read_text())
    (tmp_path / "context.png").write_bytes(b"a figure of an older summary")
    monkeypatch.setattr(plots, "find_browser", lambda: None)
    plots.write_claim_figures(summary, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budgets.html", "compute.html", "context.html", "latency.html"]
    with pytest.raises(FileNotFoundError, match="no Chrome or Chromium"):
        plots.write_pngs({tmp_path / "x.png": plots.claim_figures(summary)["context"]})


def test_committed_outputs_render_figures_as_images(monkeypatch):
    from apr_mini.renderer import STATIC_FIGURES_ENV, STATIC_RENDERER

    monkeypatch.setenv(STATIC_FIGURES_ENV, "1")
    assert notebook_renderer() == STATIC_RENDERER
