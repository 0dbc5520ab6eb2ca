"""Look inside a trace tree: an ipywidgets explorer that lists its threads (by
:func:`apr_mini.trace_trees.timeline`) and shows the one you click. Used by notebook 02 on
demonstrations and by notebook 04 on live engine runs.
"""

from __future__ import annotations

import html

from . import trace_trees as tt


def segment_node(segment: tt.Segment) -> str:
    """The search node a thread explores (``0,1``): its prompt's ``Moving to Node #...``. Thread names
    (``root/0.2``: spawn 0, child 2) say where a thread sits in the tree; node ids say which state it searches."""
    first = segment.text.split("\n", 1)[0]
    return first.rsplit("Moving to Node #", 1)[-1].strip() if "Moving to Node #" in first else "?"


def segment_label(segment: tt.Segment) -> str:
    return (f"{'    ' * segment.depth}{segment.thread} (node #{segment_node(segment)}) · call {segment.call}"
            f" · {segment.outcome} · tokens {segment.start}-{segment.end}")


def tree_explorer(tree: dict, title: str = ""):
    """An ipywidgets view: a list of threads (indented by depth) and the selected thread's text."""
    import ipywidgets as widgets

    segments = tt.timeline(tree)
    chooser = widgets.Select(options=[(segment_label(s), i) for i, s in enumerate(segments)], rows=min(12, len(segments)),
                             layout=widgets.Layout(width="100%"))
    reader = widgets.HTML()

    def show(change=None):
        segment = segments[chooser.value]
        reader.value = (f"<b>{html.escape(segment.thread)}, node #{html.escape(segment_node(segment))}, "
                        f"call {segment.call}</b> ({segment.outcome})"
                        f"<pre style='max-height:420px;overflow:auto;font-size:12px'>{html.escape(segment.text)}</pre>")

    chooser.observe(show, names="value")
    chooser.value = 0
    show()
    header = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
    return widgets.VBox(header + [chooser, reader])


def trained_tokens_html(ids: list[int], n_prompt: int, tokenizer) -> str:
    """A training row as HTML: the prompt (or join) tokens, masked, in grey; the completion tokens,
    trained, highlighted (GRPO and SFT train only what the model wrote)."""
    pieces = []
    for i, token in enumerate(ids):
        text = html.escape(tokenizer.decode([token]) if token != tokenizer.eos_token_id else "</s>")
        style = "color:#999" if i < n_prompt else "background:#c8f0c8"
        pieces.append(f"<span style='{style}'>{text}</span>")
    return ("<pre style='max-height:360px;overflow:auto;font-size:12px;white-space:pre-wrap'>"
            + "".join(pieces) + "</pre>")
