"""The lessons are committed with outputs a reader sees without running (apr_mini.notebook_outputs):
made by their present code from the shipped cpu data, figures as images, each notebook small."""

import json

import pytest

from apr_mini import notebook_outputs

LESSONS = notebook_outputs.lessons()


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_committed_outputs_are_current_readable_and_small(path):
    notebook = json.loads(path.read_text())
    assert notebook_outputs.is_current(path), (
        f"{path.name}: its code changed since its outputs were made; run python -m apr_mini notebooks {path.name[:2]}")
    assert notebook["metadata"]["apr_mini"]["outputs_profile"] == "cpu"
    outputs = [o for cell in notebook["cells"] for o in cell.get("outputs", [])]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes, "a lesson shows at least one figure"
    assert not mimes & set(notebook_outputs.LIVE_ONLY), "figures are stored as images, not plotly JSON"
    assert len(path.read_bytes()) <= notebook_outputs.MAX_BYTES


def test_a_changed_code_cell_makes_the_outputs_stale(tmp_path):
    notebook = json.loads(LESSONS[0].read_text())
    edited = tmp_path / LESSONS[0].name
    edited.write_text(json.dumps(notebook))
    assert notebook_outputs.is_current(edited) == notebook_outputs.is_current(LESSONS[0])
    code = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    code["source"] = "".join(code["source"]) + "\n# edited"
    edited.write_text(json.dumps(notebook))
    assert not notebook_outputs.is_current(edited)


def test_rendering_without_a_browser_is_a_one_line_error_not_a_hung_kernel(monkeypatch, tmp_path):
    from apr_mini import plots
    from apr_mini.config import UserFacingError

    copy = tmp_path / "lesson.ipynb"  # never the lesson itself: a missing check would rewrite it
    copy.write_text(notebook_outputs.lessons()[0].read_text())
    monkeypatch.setattr(plots, "find_browser", lambda: None)
    with pytest.raises(UserFacingError, match="Chrome or Chromium"):
        notebook_outputs.render(copy)
    assert copy.read_text() == notebook_outputs.lessons()[0].read_text()
