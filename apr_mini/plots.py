"""Plotly figures shared by the notebooks and ``python -m apr_mini demo``."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

# One colour per method, in every figure of every notebook
METHOD_COLORS = {"SoS+": "#EF553B", "APR": "#636EFA"}

def find_browser() -> str | None:
    """The Chrome or Chromium that kaleido will drive (``$BROWSER_PATH`` first, then the usual names on
    ``PATH``), or None: without one, figures are HTML only."""
    from choreographer.utils import get_browser_path

    return get_browser_path(["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"])


def write_pngs(figures: dict[str | Path, go.Figure], width: int = 900) -> list[Path]:
    """Save each figure as a PNG with kaleido, plotly's own static exporter, in one browser session.
    kaleido drives the machine's Chrome or Chromium (:func:`find_browser`; on Debian ``apt install
    chromium``). MathJax is off: kaleido would fetch it from a CDN, and no figure here uses LaTeX."""
    import kaleido

    if find_browser() is None:
        raise FileNotFoundError("no Chrome or Chromium found to draw PNGs: install chromium or set BROWSER_PATH")
    jobs = [{"fig": figure, "path": str(Path(path).resolve()),
             "opts": {"format": "png", "width": width, "height": figure.layout.height or 450}}
            for path, figure in figures.items()]
    kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False})
    return [Path(job["path"]) for job in jobs]


def method_color(name: str) -> str | None:
    """The colour of the method a run's name starts with ("APR...", "apr-...", "SoS+...", "sosp-...")."""
    lowered = name.lower()
    if lowered.startswith("sos"):
        return METHOD_COLORS["SoS+"]
    return METHOD_COLORS["APR"] if lowered.startswith("apr") else None


METRICS = [
    ("total tokens", "total_tokens"),
    ("longest sequence", "longest_sequence"),
    ("critical path", "critical_path"),
]


def demo_token_figure(demos: list[dict], title: str = "What a demonstration costs, in tokens") -> go.Figure:
    """Box plots of SoS+ vs APR demonstrations: total compute, context needed, and sequential depth.

    A SoS+ trace is one sequence, so its three numbers coincide; APR spends more tokens in total but
    needs a shorter context and a shorter chain of dependent tokens.
    """
    fig = go.Figure()
    for label, key in METRICS:
        fig.add_trace(go.Box(y=[row["sosp"]["tokens"] for row in demos], name=label, legendgroup="SoS+",
                             offsetgroup="SoS+", marker_color=METHOD_COLORS["SoS+"], showlegend=key == "total_tokens",
                             x=[label] * len(demos), boxpoints=False))
        fig.add_trace(go.Box(y=[row["apr"]["stats"][key] for row in demos], name=label, legendgroup="APR",
                             offsetgroup="APR", marker_color=METHOD_COLORS["APR"], showlegend=key == "total_tokens",
                             x=[label] * len(demos), boxpoints=False))
    fig.data[0].name, fig.data[1].name = "SoS+", "APR"
    fig.update_layout(boxmode="group", title=title, yaxis_title="tokens", height=420)
    return fig


def timeline_figure(segments, title: str = "Threads over time (in tokens)") -> go.Figure:
    """A Gantt chart of :func:`apr_mini.explorer.timeline`: parallel children side by side."""
    colors = {"spawn": "#636EFA", "solved": "#00CC96", "no solution": "#EF553B"}
    fig = go.Figure()
    for outcome, color in colors.items():
        chosen = [s for s in segments if s.outcome == outcome]
        if chosen:
            fig.add_trace(go.Bar(
                x=[s.end - s.start for s in chosen], base=[s.start for s in chosen],
                y=[f"{s.thread} · {s.call}" for s in chosen], orientation="h", marker_color=color, name=outcome,
                hovertext=[f"{s.thread}, call {s.call}: tokens {s.start}-{s.end}" for s in chosen]))
    order = [f"{s.thread} · {s.call}" for s in sorted(segments, key=lambda s: (s.thread, s.call))]
    # every label shown (tickvals), with room for each: plotly drops labels that would overlap
    fig.update_layout(title=title, xaxis_title="token time (children run in parallel)", barmode="overlay",
                      yaxis={"categoryorder": "array", "categoryarray": order[::-1], "tickmode": "array",
                             "tickvals": order},
                      height=max(260, 26 * len(segments) + 160))
    return fig


def context_fit_figure(demos: list[dict], windows: list[int] | None = None) -> go.Figure:
    """Share of demonstrations that fit a context window: SoS+ traces, APR's longest sequence, and
    the same APR search written out as one sequence (its total tokens)."""
    curves = [
        ("SoS+ trace", sorted(row["sosp"]["tokens"] for row in demos), METHOD_COLORS["SoS+"], "solid"),
        ("APR, longest thread", sorted(row["apr"]["stats"]["longest_sequence"] for row in demos),
         METHOD_COLORS["APR"], "solid"),
        ("APR search as one sequence", sorted(row["apr"]["stats"]["total_tokens"] for row in demos),
         METHOD_COLORS["APR"], "dot"),
    ]
    top = max(values[-1] for _, values, _, _ in curves)
    windows = windows or list(range(0, top + 64, max(1, top // 60)))
    fig = go.Figure()
    for name, values, color, dash in curves:
        fig.add_trace(go.Scatter(x=windows, y=[sum(v <= w for v in values) / len(values) for w in windows],
                                 name=name, line={"color": color, "dash": dash}))
    fig.update_layout(title="How many demonstrations fit in a context window?", xaxis_title="context window (tokens)",
                      yaxis_title="share that fits", yaxis_tickformat=".0%", height=380)
    return fig


def advantage_timeline_figure(trees: list[tuple[str, dict, float]], title: str = "Every thread trains with its tree's advantage") -> go.Figure:
    """Threads of several trees in token time (as :func:`timeline_figure`), one panel row per tree,
    each bar coloured by the advantage its tree got (blue: pushed up, red: pushed down)."""
    from . import trace_trees as tt

    bound = max([abs(a) for _, _, a in trees] + [1e-9])
    fig = go.Figure()
    labels = []
    for k, (name, tree, advantage) in enumerate(trees):
        segments = tt.timeline(tree)
        ys = [f"{name} · {s.thread} · {s.call}" for s in segments]
        labels += ys
        fig.add_trace(go.Bar(
            x=[s.end - s.start for s in segments], base=[s.start for s in segments], y=ys, orientation="h",
            marker={"color": [advantage] * len(segments), "colorscale": "RdBu", "cmin": -bound, "cmax": bound,
                    "colorbar": {"title": "advantage"}, "showscale": k == 0},
            name=f"{name} (A={advantage:+.2f})",
            hovertext=[f"{name}, {s.thread} call {s.call} ({s.outcome}): advantage {advantage:+.2f}" for s in segments]))
    fig.update_layout(title=title, xaxis_title="token time (children run in parallel)", barmode="overlay",
                      showlegend=False, yaxis={"categoryorder": "array", "categoryarray": labels[::-1]},
                      height=max(300, 20 * len(labels) + 140))
    return fig


COMPARISON_PANELS = [("accuracy (verified)", "accuracy"), ("total tokens (compute)", "total_tokens"),
                     ("longest sequence (context)", "longest_sequence"),
                     ("critical path (tokens in order)", "critical_path"), ("latency (s per problem)", "latency_s")]


def method_comparison_figure(records: dict[str, list[dict]], title: str = "APR vs SoS+") -> go.Figure:
    """One panel per measure, one bar per method (its colour): accuracy on a 0..1 axis with a 95%
    interval and the count solved, the costs as means per problem. ``records`` maps a method's name
    to its engine records (one per problem)."""
    from plotly.subplots import make_subplots

    from .inference import problem_rows
    from .stats import bootstrap_mean

    fig = make_subplots(rows=1, cols=len(COMPARISON_PANELS), subplot_titles=[t for t, _ in COMPARISON_PANELS])
    for name, method_records in records.items():
        rows = problem_rows(method_records)
        for col, (_, key) in enumerate(COMPARISON_PANELS, start=1):
            values = [float(r[key]) for r in rows]
            if key == "accuracy":
                stats = bootstrap_mean([values], rounds=1000)
                error = {"type": "data", "symmetric": False, "array": [stats["ci95"][1] - stats["mean"]],
                         "arrayminus": [stats["mean"] - stats["ci95"][0]]}
                text = [f"{int(sum(values))}/{len(values)}"]
            else:
                error, text = None, [f"{sum(values) / len(values):,.0f}" if key != "latency_s"
                                     else f"{sum(values) / len(values):.2f}"]
            fig.add_bar(x=[name], y=[sum(values) / len(values)], error_y=error, text=text, textposition="outside",
                        marker_color=method_color(name), name=name, showlegend=col == 1, row=1, col=col)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    fig.update_layout(title=title, height=400, margin={"t": 90})
    return fig


def loss_figure(tables: dict[str, dict], title: str = "Where each method loses") -> go.Figure:
    """One bar per model (its method's colour) and cause: the share of problems lost to each cause of
    :func:`apr_mini.attribution.loss_attribution` (``tables`` maps a model's name to its table)."""
    from .attribution import CAUSES

    fig = go.Figure()
    for name, table in tables.items():
        shares = [table[cause] / max(1, table["n"]) for cause in CAUSES]
        fig.add_bar(x=list(CAUSES), y=shares, name=f"{name} (n={table['n']})", marker_color=method_color(name),
                    marker_pattern_shape="/" if "GRPO" in name else "", text=[f"{table[c]}" for c in CAUSES],
                    textposition="outside")
    fig.update_layout(title=title, barmode="group", yaxis={"title": "share of problems", "tickformat": ".0%"},
                      height=420)
    return fig


GRPO_PANELS = [("reward (sampled trees)", "reward"), ("greedy accuracy (held-out)", "eval.accuracy"),
               ("children per tree", "children"), ("total tokens per tree", "total_tokens"),
               ("KL to the SFT model (per token)", "kl"), ("trees that ended cleanly", "well_formed")]


def grpo_curves_figure(curves: dict[str, list[dict]], title: str = "GRPO learning curves") -> go.Figure:
    """One panel per quantity of a GRPO run's ``curve.jsonl`` against the step, one line per run,
    coloured by its method (:func:`method_color`); runs of one method differ in dash."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=3, subplot_titles=[label for label, _ in GRPO_PANELS])
    seen: dict[str | None, int] = {}
    for name, points in curves.items():
        color = method_color(name)
        n = seen[color] = seen.get(color, -1) + 1
        for i, (_, key) in enumerate(GRPO_PANELS):
            if key.startswith("eval."):
                chosen = [(p["step"], p["eval"][key[5:]]) for p in points if "eval" in p]
            else:
                chosen = [(p["step"], p[key]) for p in points if p.get(key) is not None]
            fig.add_trace(go.Scatter(x=[s for s, _ in chosen], y=[v for _, v in chosen], name=name, legendgroup=name,
                                     showlegend=i == 0, mode="lines+markers" if key.startswith("eval.") else "lines",
                                     line={"color": color, "dash": ["solid", "dot", "dash", "dashdot"][n % 4]}),
                          row=i // 3 + 1, col=i % 3 + 1)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=560)
    return fig


def _error_y(points: list[dict]) -> dict:
    return {"type": "data", "symmetric": False, "array": [p["ci95"][1] - p["accuracy"] for p in points],
            "arrayminus": [p["accuracy"] - p["ci95"][0] for p in points], "thickness": 1}


def _series_figure(groups: dict[str, list[dict]], x_key: str, title: str, x_title: str, *, log_x: bool = False,
                   seeds: bool = True) -> go.Figure:
    """Accuracy (95% interval over problems and seeds) against ``x_key``, one line per series,
    coloured by method; each seed's own accuracy as a faint dot."""
    fig = go.Figure()
    dashes: dict[str | None, int] = {}
    for name, points in groups.items():
        points = sorted(points, key=lambda p: p[x_key])
        color = method_color(name)
        n = dashes[color] = dashes.get(color, -1) + 1
        hover = [f"{name} · {p['name']}: {p['accuracy']:.1%} ({p['ci95'][0]:.1%}-{p['ci95'][1]:.1%}), "
                 f"n={p['n']}, {p['seeds']} seed(s)" + (" · derived" if p.get("derived") else "") for p in points]
        fig.add_trace(go.Scatter(x=[p[x_key] for p in points], y=[p["accuracy"] for p in points], name=name,
                                 mode="lines+markers", error_y=_error_y(points), hovertext=hover, hoverinfo="text",
                                 line={"color": color, "dash": ["solid", "dash", "dot", "dashdot", "longdash"][n % 5]},
                                 marker={"symbol": ["circle", "square", "diamond", "triangle-up", "x"][n % 5], "size": 8}))
        spread = [(p[x_key], a) for p in points if p["seeds"] > 1 for a in p["seed_accuracies"]]
        if seeds and spread:
            fig.add_trace(go.Scatter(x=[x for x, _ in spread], y=[a for _, a in spread], mode="markers",
                                     name=f"{name}: each seed", legendgroup=name, showlegend=False,
                                     marker={"color": color, "opacity": 0.35, "size": 5}, hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="accuracy (verified)", yaxis_tickformat=".0%",
                      yaxis_range=[0, 1], height=440)
    if len(groups) <= 4:  # a long legend below the plot would squash it; plotly's default column at the right does not
        fig.update_layout(legend={"orientation": "h", "y": -0.2})
    if log_x:  # ticks at 1-2-5 steps, written out (plotly's default log ticks read as "6 7 8 9 1000 2 3")
        xs = [p[x_key] for points in groups.values() for p in points if p.get(x_key)]
        ticks = [m * 10 ** e for e in range(0, 7) for m in (1, 2, 5) if min(xs) / 2 <= m * 10 ** e <= max(xs) * 2]
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:,}" for t in ticks])
    return fig


def claim_figures(summary: dict) -> dict[str, go.Figure]:
    """The reproduction's figures (:func:`apr_mini.results.reproduce`): accuracy against the context
    window, total tokens and latency, and how well the budget-conditioned models obey their budget."""
    by_series: dict[str, dict[str, list[dict]]] = {"context": {}, "compute": {}, "latency": {}}
    for claim in by_series:
        for p in summary[claim]:
            by_series[claim].setdefault(p.get("series", p["label"]), []).append(p)
    figures = {
        "context": _series_figure(by_series["context"], "window", "Claim 1: accuracy within a context window",
                                  "context window (tokens); SoS+ smaller windows derived from its full run"),
        "compute": _series_figure(by_series["compute"], "total_tokens", "Claim 2: accuracy against total tokens",
                                  "total tokens per problem (all threads, all samples)", log_x=True),
    }
    if summary["latency"]:
        fig = _series_figure(by_series["latency"], "latency_alone_s", "Claim 3: accuracy against latency",
                             "seconds per problem, alone on the machine (median of rounds)", seeds=False)
        floor = [p for p in summary["latency"] if p["method"] == "apr"]
        fig.add_trace(go.Scatter(x=[p["floor_s"] for p in floor], y=[p["accuracy"] for p in floor], mode="markers",
                                 name="APR critical-path floor", marker={"color": METHOD_COLORS["APR"],
                                                                          "symbol": "line-ns-open", "size": 14},
                                 hovertext=[f"{p['name']}: decoded critical path x single-stream time per token = "
                                            f"{p['floor_s']:.2f} s" for p in floor], hoverinfo="text"))
        figures["latency"] = fig
    budget = [p for p in summary["compute"] if "budget" in p]
    if budget:
        from plotly.subplots import make_subplots

        panels = (("SoS+ token budget", "total_tokens", "tokens per problem"),
                  ("APR sub-call budget", "children", "children per problem"))
        fig = make_subplots(rows=1, cols=2, subplot_titles=[label for label, _, _ in panels])
        for col, (label, measure, unit) in enumerate(panels, start=1):
            points = sorted((p for p in budget if p["label"] == label), key=lambda p: p["budget"])
            xs = [p["budget"] for p in points]
            fig.add_trace(go.Scatter(x=xs, y=[p[measure] for p in points], mode="lines+markers", name=f"{label}: used",
                                     line={"color": method_color(label)}), row=1, col=col)
            for seed in range(points[0]["seeds"] if points and points[0]["seeds"] > 1 else 0):  # seeds can disagree
                fig.add_trace(go.Scatter(x=xs, y=[p["seed_costs"][measure][seed] for p in points], mode="lines+markers",
                                         name=f"{label}: each seed", legendgroup=f"{label} seeds", showlegend=seed == 0,
                                         opacity=0.35, line={"color": method_color(label), "width": 1},
                                         hovertext=[f"seed {seed}" for _ in points]), row=1, col=col)
            fig.add_trace(go.Scatter(x=xs, y=xs, mode="lines", name="asked (the budget itself)", showlegend=col == 1,
                                     line={"color": "grey", "dash": "dot"}), row=1, col=col)
            fig.update_xaxes(title_text="budget in the prompt", row=1, col=col)
            fig.update_yaxes(title_text=unit, row=1, col=col)
        fig.update_layout(title="Do the budget-conditioned models obey their budget?", height=380)
        figures["budgets"] = fig
    if summary.get("depth"):
        figures["depth"] = depth_figure(summary["depth"])
    return figures


TASK_COLORS = ("#7F7F7F", "#2A2A2A")  # the depth figure's tasks, shallow then deep (methods keep theirs elsewhere)


def depth_figure(depth: list[dict], title: str = "Depth: APR minus SoS+ on each task") -> go.Figure:
    """Each claim's APR - SoS+ difference (95% interval) at each task, side by side: what depth changes."""
    fig = go.Figure()
    for color, task in zip(TASK_COLORS, dict.fromkeys(r["task"] for r in depth)):
        rows = [r for r in depth if r["task"] == task and r["difference"] is not None]  # a paired difference to draw
        fig.add_trace(go.Scatter(
            x=[r["claim"] for r in rows], y=[r["difference"] for r in rows], name=task, mode="markers",
            marker={"color": color, "size": 11}, error_y=_error_y([{"accuracy": r["difference"], "ci95": r["ci95"]}
                                                                   for r in rows]),
            hovertext=[f"{task}, {r['claim']} ({r['setting']}): {r['difference']:+.1%} "
                       f"({r['ci95'][0]:+.1%} to {r['ci95'][1]:+.1%}), n={r['n']}" for r in rows], hoverinfo="text"))
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    fig.update_layout(title=title, scattermode="group", xaxis_title="claim", yaxis_title="APR - SoS+ (accuracy)",
                      yaxis_tickformat="+.0%", height=400, legend={"orientation": "h", "y": -0.2})
    return fig


def fixed_children_figure(studies: dict[str, dict],
                          title: str = "What RL buys: APR's paired gain at a fixed number of children, and free") -> go.Figure:
    """RL's paired gain (after - before, 95% interval) at each fixed number of children and with free
    spawning, one series per task (``studies``: task -> what ``experiments/rl_fixed_children.py`` wrote)."""
    fig = go.Figure()
    for color, (task, study) in zip(TASK_COLORS, studies.items()):
        points = [(f"{n} fixed", change["accuracy"]) for n, change in study["fixed_children"].items()]
        points += [("free", study["free_spawning"]["accuracy"])] if study.get("free_spawning") else []
        fig.add_trace(go.Scatter(
            x=[x for x, _ in points], y=[a["difference"] for _, a in points], name=task, mode="markers",
            marker={"color": color, "size": 11},
            error_y=_error_y([{"accuracy": a["difference"], "ci95": a["ci95"]} for _, a in points]),
            hovertext=[f"{task}, {x}: {a['before']:.1%} -> {a['after']:.1%} ({a['difference']:+.1%}, "
                       f"{a['ci95'][0]:+.1%} to {a['ci95'][1]:+.1%}), n={a['n']}" for x, a in points], hoverinfo="text"))
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    fig.update_layout(title=title, scattermode="group", xaxis_title="children per spawn",
                      yaxis_title="after RL - before (accuracy)", yaxis_tickformat="+.0%", height=400,
                      legend={"orientation": "h", "y": -0.2})
    return fig


def write_claim_figures(summary: dict, out: Path) -> None:
    """Each of :func:`claim_figures` as HTML (interactive) and, where a browser can draw it, as PNG
    (for the README). A PNG that cannot be redrawn is removed: one from an older summary would
    contradict this one."""
    import warnings

    figures = claim_figures(summary)
    for name, figure in figures.items():
        figure.write_html(out / f"{name}.html", include_plotlyjs="cdn", div_id=name)  # a fixed id: the same summary, the same file
        (out / f"{name}.png").unlink(missing_ok=True)
    if find_browser() is None:
        return
    try:
        write_pngs({out / f"{name}.png": figure for name, figure in figures.items()})
    except Exception as err:  # kaleido's and the browser's own errors: the HTML figures stand
        for name in figures:
            (out / f"{name}.png").unlink(missing_ok=True)
        warnings.warn(f"the PNG figures in {out} were not drawn ({type(err).__name__}: {err}); the HTML ones are there")
