"""How the notebooks show plotly figures: interactive in JupyterLab and exported pages, Colab's own
renderer on Colab, PNGs for the committed outputs (:mod:`apr_mini.notebook_outputs`).

:func:`apr_mini.config.print_environment`, every notebook's versions cell, calls
:func:`use_notebook_renderer` once."""

from __future__ import annotations

import os
import sys

# Plotly's JSON for JupyterLab, plus HTML with plotly.js inlined, so that a figure also shows in an
# exported page (nbconvert --to html) and in viewers that do not run Plotly's extension. Colab shows
# each output in its own frame, which plotly's own "colab" renderer is made for.
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"
COLAB_RENDERER = "colab"
# the committed outputs (apr_mini.notebook_outputs): PNGs, which GitHub shows without JavaScript
STATIC_FIGURES_ENV = "APR_STATIC_FIGURES"
STATIC_RENDERER = "png"


def notebook_renderer() -> str:
    """The plotly renderer for where this kernel runs: :data:`STATIC_RENDERER` when
    ``$APR_STATIC_FIGURES`` is set, :data:`COLAB_RENDERER` on Colab, else :data:`NOTEBOOK_RENDERER`."""
    if os.environ.get(STATIC_FIGURES_ENV):
        return STATIC_RENDERER
    return COLAB_RENDERER if "google.colab" in sys.modules else NOTEBOOK_RENDERER


def use_notebook_renderer() -> None:
    """Make every ``figure.show()`` render with :func:`notebook_renderer` (notebooks call this once)."""
    import plotly.io as pio

    pio.renderers.default = notebook_renderer()
    if pio.renderers.default == STATIC_RENDERER:
        import warnings

        import kaleido

        # one browser draws every figure of the notebook; MathJax would come from a CDN, and no figure needs it
        pio.defaults.mathjax = None
        warnings.filterwarnings("ignore", message="The kopts argument is ignored if using a server")
        pio.renderers[STATIC_RENDERER].width = 900
        kaleido.start_sync_server(mathjax=False, silence_warnings=True)
