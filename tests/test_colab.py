"""Every notebook opens on Colab: the same setup cell first, no path that assumes the repository
layout afterwards, and the cell finds a clone from anywhere (APR_MINI_HOME) or refuses clearly."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apr_mini import colab

RELEASED = colab.student_notebooks()
ALL_NOTEBOOKS = colab.notebooks() + RELEASED
# reaching files by the notebook's own place: "../data", Path(".."), or a module's __file__
LAYOUT_ASSUMPTION = re.compile(r"""["']\.\.(/|["'])|__file__""")


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem + ("-student" if p in RELEASED else ""))
def test_every_notebook_starts_with_the_setup_cell_and_reaches_files_through_root(path):
    cells = code_cells(path)
    source, metadata = colab.expected_setup(path)
    first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert cells[0] == source and colab.has_setup_metadata(first, metadata), \
        f"run `python -m apr_mini colab` to refresh {path.name}"
    offending = [line for cell in cells[1:] for line in cell.splitlines() if LAYOUT_ASSUMPTION.search(line)]
    assert not offending, f"{path.name} reaches files by its own place instead of ROOT: {offending}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem + ("-student" if p in RELEASED else ""))
def test_every_notebook_is_valid_nbformat_with_cell_ids(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = json.loads(path.read_text())
    nbformat.validate(nbformat.from_dict(notebook))  # raises on a malformed notebook
    assert notebook["nbformat_minor"] < 5 or all("id" in cell for cell in notebook["cells"]), \
        f"{path.name} has cells without an id (nbformat 4.5 needs them; Jupyter adds them when it saves)"


def run_setup_cell(cwd: Path, home: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "APR_MINI_HOME"} | ({"APR_MINI_HOME": home} if home else {})
    return subprocess.run([sys.executable, "-c", colab.setup_source()], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_setup_cell_finds_the_clone_from_inside_it_and_through_apr_mini_home(tmp_path):
    inside = run_setup_cell(colab.REPO / "notebooks", None)
    outside = run_setup_cell(tmp_path, str(colab.REPO / "notebooks"))
    assert inside.stdout.strip() == outside.stdout.strip() == f"apr-mini at {colab.REPO}"
    assert not list(tmp_path.iterdir()), "nothing is cloned or installed when a clone is found"


def test_the_setup_cell_refuses_an_apr_mini_home_that_is_not_a_clone(tmp_path):
    done = run_setup_cell(tmp_path, str(tmp_path))
    assert done.returncode != 0 and f"APR_MINI_HOME={tmp_path} is not inside an apr-mini clone" in done.stderr


def test_sync_inserts_the_setup_cell_once(tmp_path):
    path = tmp_path / "lesson.ipynb"
    shutil.copy(colab.REPO / "notebooks" / "01_countdown.ipynb", path)
    notebook = json.loads(path.read_text())
    notebook["cells"] = [c for c in notebook["cells"] if not "".join(c["source"]).startswith(colab.MARKER)]
    path.write_text(json.dumps(notebook))
    assert colab.sync_setup_cells([path]) == [path] and colab.sync_setup_cells([path]) == []
    assert code_cells(path)[0] == colab.setup_source()
    assert colab.sync_setup_cells([path], repo_url="https://github.com/someone/fork") == [path]
    assert 'REPO_URL = "https://github.com/someone/fork"' in code_cells(path)[0]
    assert sum(c.startswith(colab.MARKER) for c in code_cells(path)) == 1


def test_assignments_open_from_the_student_course_in_a_locked_setup_cell():
    for path in RELEASED + sorted((colab.REPO / "assignments" / "source").glob("*/*.ipynb")):
        assert f'REPO_URL = "{colab.COURSE_URL}"' in code_cells(path)[0], path.name
        first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert first["metadata"]["nbgrader"]["locked"], path.name


def test_the_readme_links_every_lesson_and_student_notebook_to_colab():
    readme = (colab.REPO / "README.md").read_text()
    missing = [p.name for p in colab.lessons() if colab.colab_link(p) not in readme]
    missing += [p.name for p in RELEASED if colab.course_link(p) not in readme]
    assert not missing, f"README lacks Open-in-Colab links for {missing} (python -m apr_mini colab prints them)"


@pytest.mark.slow
@pytest.mark.parametrize("path", colab.lessons(), ids=lambda p: p.stem)
def test_lessons_run_from_a_copy_outside_the_repository(path, tmp_path, monkeypatch):
    """What a Colab user gets, less the clone: the notebook alone in a folder, the setup cell pointed at a clone."""
    nbformat, nbclient = pytest.importorskip("nbformat"), pytest.importorskip("nbclient")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    monkeypatch.setenv("APR_MINI_HOME", str(colab.REPO))
    notebook = nbformat.read(copy, as_version=4)
    nbclient.NotebookClient(notebook, timeout=1800, resources={"metadata": {"path": str(tmp_path)}}).execute()
