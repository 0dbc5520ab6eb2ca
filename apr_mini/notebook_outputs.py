"""Lessons readable without running: each notebook is committed with its outputs from the shipped data.

GitHub, and a Colab page before its first run, show a notebook's stored outputs but run no JavaScript,
so a plotly figure stored as plotly JSON shows nothing there. ``python -m apr_mini notebooks`` (``make
notebooks``) runs every lesson top to bottom in a fresh kernel under the ``cpu`` profile, with
``APR_STATIC_FIGURES=1`` so that every figure renders as a PNG (kaleido, the exporter
:func:`apr_mini.plots.write_pngs` uses; it drives the machine's Chrome or Chromium, so rendering refuses
to start without one), and writes the outputs back into ``notebooks/``. Each notebook
then records the digest of the code that made its outputs; ``tests/test_notebook_outputs.py`` fails
when a code cell changed since, so committed outputs cannot silently go stale. nbmake still runs every
notebook under ``tiny`` in the suite and never writes to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .config import UserFacingError
from .renderer import STATIC_FIGURES_ENV

REPO = Path(__file__).resolve().parent.parent
MAX_BYTES = 2_000_000  # a committed notebook: images and text, not an inlined plotly.js per figure
# outputs that only a live kernel can use: a widget's view (its text fallback stays) and plotly's JSON
LIVE_ONLY = ("application/vnd.jupyter.widget-view+json", "application/vnd.plotly.v1+json")


def lessons() -> list[Path]:
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_digest(notebook: dict) -> str:
    """What the outputs depend on in the notebook itself: every code cell's source, in order."""
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in notebook["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()[:16]


def _readable(notebook) -> None:
    """Keep what a reader sees; drop what only a live kernel uses, and per-run noise."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            for mime in LIVE_ONLY:
                output.get("data", {}).pop(mime, None)


def render(path: Path, profile: str = "cpu", timeout: int = 3600) -> int:
    """Run one notebook under ``profile`` and write it back with its outputs; returns its size in bytes."""
    import nbformat
    from nbclient import NotebookClient

    from .plots import find_browser

    if find_browser() is None:  # kaleido would wait for a browser forever, in the kernel, with no error
        raise UserFacingError("the committed outputs draw their figures as PNGs with Chrome or Chromium: "
                              "install one (Debian: apt install chromium) or set BROWSER_PATH")
    notebook = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("APR_PROFILE", STATIC_FIGURES_ENV)}
    os.environ.update({"APR_PROFILE": profile, STATIC_FIGURES_ENV: "1"})  # the kernel inherits them
    try:
        NotebookClient(notebook, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _readable(notebook)
    notebook.metadata["apr_mini"] = {"outputs_profile": profile, "code_digest": code_digest(notebook)}
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if len(text.encode()) > MAX_BYTES:
        raise UserFacingError(f"{path.name} would be {len(text.encode()):,} bytes with its outputs "
                              f"(at most {MAX_BYTES:,}): fewer or smaller figures")
    path.write_text(text)
    return len(text.encode())


def is_current(path: Path) -> bool:
    """Whether the notebook's stored outputs were made by its present code (see :func:`render`)."""
    notebook = json.loads(path.read_text())
    return notebook.get("metadata", {}).get("apr_mini", {}).get("code_digest") == code_digest(notebook)
