"""Every notebook (lessons and assignments) opens on Colab and other cloud notebooks: its setup cell.

The first code cell of each notebook is :data:`SETUP_CELL`, the same text everywhere. On a local
clone it only finds the clone (``ROOT``, walking up from the working directory). Anywhere else, a
Colab runtime or a notebook copied out of the repository, it clones :data:`REPO_URL` (code and the
shipped ``data/``) and installs it with pip *without extras*: the base dependencies ask for
``torch>=2.6`` and leave the service's own torch build in place (the ``cpu`` extra's pin is for
laptops and CI). ``APR_MINI_HOME`` points the cell at an existing clone instead (the grader and the
tests use it for notebooks run outside the repository). After the cell, notebooks reach files only
through ``ROOT``.

The cell must run before ``apr_mini`` is importable, so it is plain text here, written into the
notebooks by :func:`sync_setup_cells`; a test checks that every notebook carries it unchanged.

Run:  python -m apr_mini colab            (rewrite the setup cells; print the README's Colab links)
A fork changes :data:`REPO_URL`, runs the command, then ``make assignments``.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO_URL = "https://github.com/apr-mini/apr-mini"
# the assignments open from the student-facing copy (``python -m apr_mini assignments export``), which
# holds no solutions or answers; their setup cell is a locked nbgrader cell
COURSE_URL = "https://github.com/apr-mini/apr-mini-course"
LOCKED_SETUP = {"nbgrader": {"grade": False, "grade_id": "colab_setup", "locked": True, "schema_version": 3,
                             "solution": False, "task": False}}
REPO = Path(__file__).resolve().parent.parent
MARKER = "# Setup: Colab and other cloud notebooks."

SETUP_CELL = f'''{MARKER} On a local clone this cell only finds the clone (ROOT).
import os, subprocess, sys
from pathlib import Path

REPO_URL = "{{repo_url}}"
HOME = os.environ.get("APR_MINI_HOME")  # an existing clone, for a notebook run outside it
ROOT = next((p for p in (Path(HOME or ".").resolve(), *Path(HOME or ".").resolve().parents)
             if (p / "apr_mini" / "__init__.py").is_file()), None)
if ROOT is None and HOME:
    raise FileNotFoundError(f"APR_MINI_HOME={{{{HOME}}}} is not inside an apr-mini clone")
if ROOT is None:  # a cloud runtime: fetch the code and shipped data, install it, keep the service's torch
    ROOT = Path("apr-mini").resolve()
    if not ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(ROOT)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", str(ROOT)], check=True)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this kernel started before the install
print("apr-mini at", ROOT)'''


def setup_source(repo_url: str = REPO_URL) -> str:
    return SETUP_CELL.format(repo_url=repo_url)


def lessons(repo: Path = REPO) -> list[Path]:
    return sorted((repo / "notebooks").glob("*.ipynb"))


def student_notebooks(repo: Path = REPO) -> list[Path]:
    """The assignments' student versions, generated from the solution notebooks (``make assignments``)."""
    return sorted((repo / "assignments" / "release").glob("*/*.ipynb"))


def notebooks(repo: Path = REPO) -> list[Path]:
    """The lessons and the assignments' solution notebooks (the student versions are generated from them)."""
    return lessons(repo) + sorted((repo / "assignments" / "source").glob("*/*.ipynb"))


def colab_link(notebook: Path, repo: Path = REPO, repo_url: str = REPO_URL, branch: str = "main") -> str:
    """The "Open in Colab" address of a notebook in the repository at ``repo_url`` (a GitHub one)."""
    owner_name = repo_url.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/{notebook.resolve().relative_to(repo)}"


def course_link(student_notebook: Path, course_url: str = COURSE_URL, branch: str = "main") -> str:
    """Where a student version opens on Colab: in the student-facing course (``assignments export``)."""
    owner_name = course_url.removeprefix("https://github.com/").removesuffix(".git")
    return (f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/assignments/"
            f"{student_notebook.parent.name}/{student_notebook.name}")


def _code_cell(source: str, metadata: dict) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": "colab-setup", "metadata": metadata, "outputs": [],
            "source": source.splitlines(keepends=True)}


def is_assignment(path: Path) -> bool:
    return "assignments" in path.resolve().parts


def setup_cell_of(notebook: dict) -> str | None:
    """The source of a notebook's setup cell (its first code cell, if that is one), else None."""
    first = next((c for c in notebook["cells"] if c["cell_type"] == "code"), None)
    source = "".join(first["source"]) if first else ""
    return source if source.startswith(MARKER) else None


def expected_setup(path: Path, repo_url: str = REPO_URL, course_url: str = COURSE_URL) -> tuple[str, dict]:
    """The setup cell's source and metadata for a notebook: a lesson clones the repository, an
    assignment the student-facing course, in a locked cell."""
    return (setup_source(course_url), LOCKED_SETUP) if is_assignment(path) else (setup_source(repo_url), {})


def has_setup_metadata(cell: dict, metadata: dict) -> bool:
    """Whether a cell carries ``metadata`` (nbgrader adds its own keys, such as a checksum, to a locked cell)."""
    mine = cell.get("metadata", {})
    if not metadata:
        return "nbgrader" not in mine
    return all(mine.get("nbgrader", {}).get(k) == v for k, v in metadata["nbgrader"].items())


def sync_setup_cells(paths: list[Path] | None = None, repo_url: str = REPO_URL,
                     course_url: str = COURSE_URL) -> list[Path]:
    """Make :func:`expected_setup` the first code cell of each notebook; return the notebooks changed."""
    changed = []
    for path in paths if paths is not None else notebooks():
        notebook = json.loads(path.read_text())
        source, metadata = expected_setup(path, repo_url, course_url)
        cells = notebook["cells"]
        first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
        if setup_cell_of(notebook) == source and has_setup_metadata(cells[first_code], metadata):
            continue
        if setup_cell_of(notebook) is None:
            cells.insert(first_code, _code_cell(source, metadata))
        else:
            cells[first_code] = _code_cell(source, metadata)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed
