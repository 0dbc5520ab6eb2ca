"""Grading that a submission cannot game: frozen answers, a sealed process per part, the reference off.

nbgrader runs a submission top to bottom in one kernel, and the submission's cells run before the
tests that judge them: a cell can rebind the package's functions, write into the package, or hide the
cells after it. So no score comes from a kernel that ran student code. For each graded part
(:mod:`apr_mini.grading_cases`) the grader starts a fresh Python process in a scratch copy of the
package, made read-only before any submission runs, and there:

1. runs the notebook's locked cells, taken from the instructor's source (never the submission's copy);
2. builds the part's cases from the seed in the instructor's answers file;
3. seals the process (:func:`seal`): an audit hook, which Python code cannot remove, refuses writes
   outside the scratch folder, any read of the instructor's clone or of the package's source, new
   processes and threads, ctypes, new code objects and changes to the trace function; the trace
   function ends the process the moment the package's own implementation of the part runs, whatever
   name, alias, helper, reload or copy reached it;
4. runs the submission's cells, calls its functions on the cases and prints the answers.

The grader's own process, which runs no student code, compares those answers with the ones frozen by
``python -m apr_mini assignments freeze`` (the reference on the same cases; exact answers are stored as
digests). A part scores its points only if every case matches and the reference never ran. The cases
depend only on the seed, so a regrade gives the same score. Copying the package's source into a
solution by hand is not something a run can tell from writing it; that is for the instructor to read.

Run (inside the grader):  python -m apr_mini.grading  < job.json
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path

VIOLATION = 86
MARKER = "@@apr-mini-answers@@ "
REPO = Path(__file__).resolve().parent.parent
SCRATCH_ITEMS = ("apr_mini", "pyproject.toml", "tests/fixtures", "data/tiny-apr", "data/tiny-sosp")


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def digest(value) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:24]


def matches(got, want, tolerance: float) -> bool:
    """``got`` equals ``want``; floats within ``tolerance * (1 + |want|)`` when ``tolerance`` is set."""
    if tolerance and isinstance(want, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) <= tolerance * (1 + abs(want))
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(matches(g, w, tolerance) for g, w in zip(got, want))
    return type(got) is type(want) and got == want


# -- the sealed process ------------------------------------------------------------------------

def _inside(path, folders) -> bool:
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return any(real == f or real.startswith(f + os.sep) for f in folders)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
                "os.truncate", "os.utime", "os.chflags", "os.lchflags", "shutil.rmtree", "shutil.copyfile",
                "shutil.copymode", "shutil.copystat", "shutil.move", "shutil.chown", "os.setxattr", "os.removexattr"}
_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                   "pty.spawn", "os.startfile", "os.kill", "os.killpg", "webbrowser.open"}
# what the graded process also refuses (a kernel needs its threads and its debugger's trace hooks)
_STRICT_EVENTS = {"sys.settrace", "sys.setprofile", "code.__new__", "gc.get_objects", "gc.get_referrers",
                  "gc.get_referents", "socket.connect", "socket.bind"}


def seal(*, writable: list[str], hidden: list[str], sources: list[str] = (), protected: tuple = (),
         strict: bool = True) -> None:
    """From now on this process may write only under ``writable``, read nothing under ``hidden`` and no
    ``.py`` file under ``sources`` (imports read the compiled ``.pyc``), start no process and use no
    ctypes; ``strict`` also refuses threads, trace functions, new code objects, the garbage collector's
    object lists and sockets, and any change to the ``protected`` objects. Nothing can undo it (audit
    hooks cannot be removed)."""
    import _thread
    import threading

    writable = tuple(os.path.realpath(f) for f in writable)
    hidden = tuple(os.path.realpath(f) for f in hidden)
    sources = tuple(os.path.realpath(f) for f in sources)

    def refuse(*_args, **_kwargs):
        raise PermissionError("threads are not allowed while grading")

    if strict:
        _thread.start_new_thread = _thread.start_new = threading._start_new_thread = refuse
    refused = _PROCESS_EVENTS | (_STRICT_EVENTS if strict else set())

    def hook(event, args, writable=writable, hidden=hidden, sources=sources, inside=_inside, refused=refused,
             path_events=_PATH_EVENTS, flags=_WRITE_FLAGS, protected=protected):
        if event == "open":
            path, mode, open_flags = (tuple(args) + (None, None))[:3]
            if isinstance(path, int):
                return
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((open_flags or 0) & flags)
            source = inside(path, sources) and os.fsdecode(path).endswith(".py")
            if inside(path, hidden) or source or (writes and not inside(path, writable)):
                raise PermissionError(f"grading: {'writing' if writes else 'reading'} {path} is not allowed")
        elif event in path_events:
            if not all(inside(p, writable) for p in args[:2] if isinstance(p, (str, bytes, os.PathLike))):
                raise PermissionError(f"grading: {event} outside the scratch folder is not allowed")
        elif event in ("object.__setattr__", "object.__delattr__"):
            if any(args[0] is p for p in protected):
                raise PermissionError("grading: the grader's trace function cannot be changed")
        elif event in refused or event.startswith("ctypes."):
            raise PermissionError(f"grading: {event} is not allowed")

    sys.addaudithook(hook)


def _code_keys(names) -> frozenset:
    """(file, qualified name) of each ``module:qualname``: how the trace function knows the reference,
    in this module object or in any reload or copy of it."""
    import importlib

    keys = set()
    for name in names:
        module, qualname = name.split(":")
        obj = importlib.import_module(module)
        for attr in qualname.split("."):
            obj = getattr(obj, attr)
        keys.add((obj.__code__.co_filename, obj.__code__.co_qualname))
    keys |= {(importlib.__file__, "reload")}  # a reloaded builtin module (_thread) would undo the seal
    return frozenset(keys)


def _install_guard(forbidden: frozenset, called: frozenset, package: str):
    def guard(frame, event, arg, forbidden=forbidden, called=called, package=package, end=os._exit):
        key = (frame.f_code.co_filename, frame.f_code.co_qualname)
        if key in forbidden:
            end(VIOLATION)
        if key in called and (frame.f_back is None or not frame.f_back.f_code.co_filename.startswith(package)):
            end(VIOLATION)

    sys.settrace(guard)
    return guard


def _python_source(source: str) -> str:
    """A cell's text as Python (IPython's ``%magics`` become calls that fail here, as they should)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return source
    return TransformerManager().transform_cell(source)


def run_job(job: dict) -> None:
    """In the graded process: trusted cells, cases, seal, the submission's cells, its answers on stdout."""
    import linecache

    from .grading_cases import CALLED_FROM_STUDENT, find_part

    part = find_part(job["assignment"], job["grade_id"])
    namespace = {"__name__": "__main__"}
    package = str(Path(__file__).resolve().parent)
    cases = None
    sealed = False
    for source, trusted in job["cells"]:
        if not trusted and not sealed:
            cases = part.cases(random.Random(f"{job['seed']}:{part.grade_id}"))
            _python_source("")  # IPython's transformer, loaded before the package's files close
            linecache.clearcache()
            guard = _install_guard(_code_keys(part.forbidden),
                                   _code_keys(CALLED_FROM_STUDENT.get(job["assignment"], ())), package)
            seal(writable=[job["work"]], hidden=job["hidden"], sources=[package], protected=(guard,))
            sealed = True
        try:
            exec(compile(_python_source(source), "<cell>", "exec"), namespace)  # noqa: S102 - the submission's code
        except BaseException as err:  # noqa: BLE001 - a failing cell is the submission's, as in nbgrader
            print(f"cell failed: {type(err).__name__}: {err}"[:300], file=sys.stderr)
    if not sealed:
        raise SystemExit("the submission has no cell of its own")
    answers = []
    for case in cases:
        try:
            answers.append(part.student(namespace, case))
        except BaseException as err:  # noqa: BLE001
            answers.append(f"error: {type(err).__name__}")
    sys.stdout.write(MARKER + canonical(answers) + "\n")
    sys.stdout.flush()


# -- the grader's side -------------------------------------------------------------------------

def frozen_answers(assignment: str, seed: int) -> dict:
    """The reference's answers on every part's cases (digests for exact ones, values for tolerant ones)."""
    from .grading_cases import PARTS

    parts = {}
    for part in PARTS[assignment]:
        cases = part.cases(random.Random(f"{seed}:{part.grade_id}"))
        expected = [part.expected(case) for case in cases]
        parts[part.grade_id] = {"values": expected} if part.tolerance else {"digests": [digest(e) for e in expected]}
    return {"assignment": assignment, "seed": seed, "parts": parts}


def copy_items(repo: Path, items, dest: Path) -> None:
    """Copy the files and folders ``items`` (paths relative to ``repo``) into ``dest``, without bytecode."""
    for item in items:
        source = repo / item
        if source.is_dir():
            shutil.copytree(source, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, dest / item)


def make_scratch(folder: Path, repo: Path = REPO) -> Path:
    """A read-only copy of what graded code may import and read, plus a writable ``work`` folder."""
    copy_items(repo, SCRATCH_ITEMS, folder)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "apr_mini")], check=False)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    (folder / "work").mkdir()
    return folder


def graded_cells(submission: dict, source: dict) -> list[tuple[str, bool]]:
    """The code the graded process runs, in the submission's order: locked cells from the source (a
    submission cannot change them), its solution and added cells as written, no test cells."""
    def meta(cell):
        return cell.get("metadata", {}).get("nbgrader", {})

    known = {meta(c).get("grade_id"): c for c in source["cells"] if meta(c).get("grade_id")}
    out, seen = [], set()
    for cell in submission["cells"]:
        if cell.get("cell_type") != "code":
            continue
        ref = known.get(meta(cell).get("grade_id"))
        if ref is not None and meta(ref).get("grade"):
            continue  # a test cell: the grader asks its own questions
        if ref is not None and meta(ref).get("locked"):
            out.append(("".join(ref["source"]), True))
            seen.add(meta(ref)["grade_id"])
        else:
            out.append(("".join(cell.get("source", "")), False))
    missing = [("".join(c["source"]), True) for c in source["cells"] if c["cell_type"] == "code"
               and meta(c).get("locked") and not meta(c).get("grade") and meta(c).get("grade_id") not in seen]
    return missing + out


def grade_part(submission: dict, source: dict, assignment: str, grade_id: str, answers: dict, scratch: Path,
               hidden: list[str], timeout: float = 600) -> tuple[bool, str]:
    """Run one part in a sealed process on ``scratch``; (passed, why not)."""
    from .grading_cases import find_part

    part = find_part(assignment, grade_id)
    job = {"assignment": assignment, "grade_id": grade_id, "seed": answers["seed"], "work": str(scratch / "work"),
           "hidden": hidden, "cells": graded_cells(submission, source)}
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(scratch / "work"), "TMPDIR": str(scratch / "work"),
           "APR_MINI_HOME": str(scratch), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(scratch)}
    try:
        done = subprocess.run([sys.executable, "-m", "apr_mini.grading"], input=canonical(job), cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"ran past {timeout:g} s"
    if done.returncode == VIOLATION:
        return False, "used the package's own implementation"
    lines = [line for line in done.stdout.split("\n") if line.startswith(MARKER)]
    if done.returncode or not lines:
        return False, f"the graded run failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    got = json.loads(lines[-1][len(MARKER):])
    want = answers["parts"][grade_id]
    if part.tolerance:
        wrong = sum(not matches(g, w, part.tolerance) for g, w in zip(got, want["values"]))
        wrong += abs(len(got) - len(want["values"]))
    else:
        wrong = sum(digest(g) != w for g, w in zip(got, want["digests"])) + abs(len(got) - len(want["digests"]))
    return (True, "") if not wrong else (False, f"{wrong} of {len(got)} cases differ from the reference")


if __name__ == "__main__":
    run_job(json.loads(sys.stdin.read()))
