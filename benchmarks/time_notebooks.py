"""Wall time of every notebook under a profile, as a reader would run them (the README's start-here times).

Run:  python benchmarks/time_notebooks.py --profile tiny|cpu  [--notebooks 01 03] [--assignments]

Executes each notebook top to bottom in a fresh kernel (nbclient, the engine nbmake uses) from its own
folder with ``APR_PROFILE`` set, and prints one row per notebook; ``--assignments`` adds the assignments'
solution notebooks (what a finished student notebook runs). Time it in a fresh clone, as a reader starts,
on an otherwise idle machine: another job on the same cores slows every cell.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    import nbformat
    from nbclient import NotebookClient

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--notebooks", nargs="*", help="number prefixes, e.g. 01 03 (default: all)")
    parser.add_argument("--assignments", action="store_true", help="also the assignments' solution notebooks")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args()
    os.environ["APR_PROFILE"] = args.profile
    paths = sorted(p for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")
                   if not args.notebooks or p.name[:2] in args.notebooks)
    if args.assignments:
        paths += sorted((REPO / "assignments" / "source").glob("*/*.ipynb"))
    print(f"| notebook | seconds ({args.profile}) |\n|---|---|")
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(notebook, timeout=args.timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
        print(f"| {path.stem} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
