"""Plotly figures shared by the notebooks and ``python -m apr_mini demo``."""

from __future__ import annotations

import plotly.graph_objects as go

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
                             offsetgroup="SoS+", marker_color="#EF553B", showlegend=key == "total_tokens",
                             x=[label] * len(demos), boxpoints=False))
        fig.add_trace(go.Box(y=[row["apr"]["stats"][key] for row in demos], name=label, legendgroup="APR",
                             offsetgroup="APR", marker_color="#636EFA", showlegend=key == "total_tokens",
                             x=[label] * len(demos), boxpoints=False))
    fig.data[0].name, fig.data[1].name = "SoS+", "APR"
    fig.update_layout(boxmode="group", title=title, yaxis_title="tokens", height=420)
    return fig
