"""Datasets on disk: problem splits, demonstrations and SFT rows as JSONL, made in parallel.

Paper section 4.1 (data): every training example is one thread's sequence, each main call and each
sub call separately (:func:`apr_mini.trace_trees.sft_rows`). Problems are unique by sorted
numbers + target, validation problems are drawn first and never appear in training. Every random
choice comes from a stream seeded by (seed, what, index), so the files are the same whatever the
number of worker processes.

Files written by :func:`build_dataset` into ``out_dir``::

    problems_train.jsonl  problems_val.jsonl     {"nums": [...], "target": T}
    demos_train.jsonl     demos_val.jsonl        problem + {"sosp": {...}, "apr": {...}} (see demonstrate)
    sft_sosp_train.jsonl  sft_apr_train.jsonl    {"id", "prompt", "completion", "solved"}
    manifest.json                                profile, command, seed, counts, timings, summary
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm.auto import tqdm

from . import trace_language as tl

from . import trace_trees as tt
from .config import DemoConfig, Profile, TaskConfig, UserFacingError
from .countdown import Problem, problem_chunk
from .demonstrations import demonstrate

CHUNK = 256


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            n += 1
    return n


class DataFileError(UserFacingError, ValueError):
    """A data file that is missing or does not hold what it should (the message names file and line)."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON object of a JSONL file (blank lines skipped); a line that is not one is a
    :class:`DataFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path} not found" if not path.exists() else f"{path} is not a file")
    rows = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataFileError(f"{path}:{lineno}: not a JSON line ({err.msg})") from None
            if not isinstance(rows[-1], dict):
                raise DataFileError(f"{path}:{lineno}: a {type(rows[-1]).__name__}, not a JSON object")
    return rows


def drop_torn_tail(path: str | Path) -> bool:
    """If a killed writer left ``path`` ending in a partial line, cut it off (with a warning) and
    return True, so that a resumed run redoes that record; a malformed line elsewhere is not
    touched (:func:`read_jsonl` names it)."""
    import warnings

    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    if not data or data.endswith(b"\n"):
        return False
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
        path.open("ab").write(b"\n")  # a whole record that only lacks its newline
        return False
    except ValueError:
        with path.open("r+b") as f:
            f.truncate(start)
        warnings.warn(f"{path}: dropped a torn last line ({len(data) - start} bytes, a write cut off by a kill); "
                      "its problem will be done again", stacklevel=2)
        return True


MAX_PROBLEM_NUMBERS = 6


def problem_from_row(row: dict, where: str = "") -> Problem:
    """A problem from ``{"nums": [...], "target": T}``: 2..6 non-negative integers and a positive
    integer target, or a :class:`DataFileError` that says what is wrong."""
    def bad(reason: str) -> DataFileError:
        return DataFileError(f"{where}: {reason}; a problem line looks like {{\"nums\": [3, 4, 5], \"target\": 12}}")

    if not isinstance(row, dict) or "nums" not in row or "target" not in row:
        raise bad("needs both 'nums' and 'target'")
    nums, target = row["nums"], row["target"]
    is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)
    if not isinstance(nums, list) or not all(is_int(x) for x in nums) or not is_int(target):
        raise bad(f"nums must be a list of integers and target an integer, got {json.dumps(nums)[:60]} "
                  f"and {json.dumps(target)[:30]}")
    if not 2 <= len(nums) <= MAX_PROBLEM_NUMBERS or min(nums) < 0 or target < 1:
        raise bad(f"Countdown takes 2..{MAX_PROBLEM_NUMBERS} numbers >= 0 and a target >= 1, "
                  f"got {len(nums)} numbers {nums[:8]} and target {target}")
    return Problem(tuple(nums), target)


def load_problems(path: str | Path, n: int | None = None) -> list[Problem]:
    """The first ``n`` problems (all if ``None``) of a problems JSONL file; an empty file, or a line
    that is not a problem, is a :class:`DataFileError`."""
    rows = read_jsonl(path)
    if not rows:
        raise DataFileError(f"{path} holds no problems")
    return [problem_from_row(row, f"{path}: problem {i + 1}") for i, row in enumerate(rows[:n])]


def outside_task(problems: list[Problem], task: TaskConfig) -> list[Problem]:
    """The problems a model trained on ``task`` has never seen the like of (count, numbers or target)."""
    return [p for p in problems if len(p.nums) != task.n_numbers or not task.min_target <= p.target <= task.max_target
            or not all(task.min_number <= x <= task.max_number for x in p.nums)]


def _pool(workers: int):
    """A process pool for ``workers > 1``, else ``None`` (work stays in this process)."""
    return mp.get_context().Pool(workers) if workers > 1 else None


def _map(fn: Callable, items: list, pool, chunksize: int) -> Iterator:
    return pool.imap(fn, items, chunksize=chunksize) if pool is not None else map(fn, items)


def parallel_map(fn: Callable, items: list, *, workers: int = 1, desc: str = "", progress: bool = True,
                 chunksize: int = 16) -> Iterator:
    """``map(fn, items)`` in order, over ``workers`` processes, with a progress bar."""
    pool = _pool(workers)
    try:
        for out in tqdm(_map(fn, items, pool, chunksize), total=len(items), desc=desc, disable=not progress,
                        file=sys.stderr):
            yield out
    finally:
        if pool is not None:
            pool.terminate()


def _chunk_job(args) -> list[Problem]:
    task, seed, stream, chunk = args
    return problem_chunk(task, seed, stream, chunk, CHUNK)


def unique_problems(task: TaskConfig, n: int, *, seed: int, stream: str, exclude: set = frozenset(),
                    workers: int = 1, progress: bool = True) -> list[Problem]:
    """``n`` solvable problems, unique by key and not in ``exclude``, from a seeded stream."""
    chosen: list[Problem] = []
    seen = set(exclude)
    bar = tqdm(total=n, desc=f"problems ({stream})", disable=not progress, file=sys.stderr)
    pool = _pool(workers)
    chunk, barren = 0, 0
    try:
        while len(chosen) < n:
            batch = max(1, workers) * 4
            jobs = [(task, seed, stream, k) for k in range(chunk, chunk + batch)]
            chunk += batch
            before = len(chosen)
            for problems in _map(_chunk_job, jobs, pool, chunksize=1):
                for problem in problems:
                    if len(chosen) < n and problem.key not in seen:
                        seen.add(problem.key)
                        chosen.append(problem)
            bar.update(len(chosen) - before)
            barren = barren + 1 if len(chosen) == before else 0
            if barren >= 3:
                raise ValueError(f"only {len(chosen)} distinct solvable problems found for {task} "
                                 f"(asked for {n}); widen the task's ranges or ask for fewer")
    finally:
        if pool is not None:
            pool.terminate()
    bar.close()
    return chosen


def make_splits(task: TaskConfig, n_train: int, n_val: int, *, seed: int = 0, workers: int = 1,
                progress: bool = True, n_test: int = 0) -> tuple[list[Problem], ...]:
    """Train and validation problems with no overlap (by sorted numbers + target); with ``n_test``,
    also a test split that overlaps neither: ``(train, val)`` or ``(train, val, test)``.

    The validation and training streams do not depend on ``n_test``, so adding a test split to a
    task leaves its validation problems as they were (the test problems are drawn last).
    """
    val = unique_problems(task, n_val, seed=seed, stream="val", workers=workers, progress=progress)
    train = unique_problems(task, n_train, seed=seed, stream="train", exclude={p.key for p in val},
                            workers=workers, progress=progress)
    if not n_test:
        return train, val
    test = unique_problems(task, n_test, seed=seed, stream="test", exclude={p.key for p in val + train},
                           workers=workers, progress=progress)
    return train, val, test


def _demo_job(args) -> dict:
    index, copy, problem, demo, seed, split = args
    rng = random.Random(f"{seed}:demo:{split}:{index}:{copy}")
    if copy:
        problem = Problem(tuple(rng.sample(problem.nums, len(problem.nums))), problem.target)
    row = demonstrate(problem, demo, rng)
    row["id"] = f"{split}-{index}" + (f"-{copy}" if copy else "")
    row["sosp"]["tokens"] = tl.count_tokens(row["sosp"]["trace"])
    row["apr"]["stats"] = tt.tree_stats(row["apr"]["trace_dict"]).to_dict()
    return row


def demonstrate_all(problems: list[Problem], demo: DemoConfig, *, seed: int = 0, split: str = "train",
                    traces_per_problem: int = 1, workers: int = 1, progress: bool = True) -> list[dict]:
    """SoS+ and APR demonstrations for every problem (``traces_per_problem`` each, different beams)."""
    jobs = [(i, copy, problem, demo, seed, split)
            for i, problem in enumerate(problems) for copy in range(traces_per_problem)]
    return list(parallel_map(_demo_job, jobs, workers=workers, desc=f"demonstrations ({split})", progress=progress))


def sft_rows_sosp(demos: list[dict]) -> Iterator[dict]:
    """One row per problem: the root prompt, then the whole SoS+ trace."""
    for row in demos:
        trace = row["sosp"]["trace"]
        prompt = tl.root_prompt(row["target"], row["nums"], tl.leading_condition(trace))
        yield {"id": row["id"], "prompt": prompt, "completion": trace[len(prompt):], "solved": row["sosp"]["solved"]}


def sft_rows_apr(demos: list[dict]) -> Iterator[dict]:
    """One row per main call of every thread of every APR tree."""
    for row in demos:
        for k, sft in enumerate(tt.sft_rows(row["apr"]["trace_dict"])):
            yield {"id": f"{row['id']}/{k}", **sft, "solved": row["apr"]["solved"]}


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"mean": 0, "p90": 0, "max": 0}
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(ordered), 1), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "max": ordered[-1]}


def summarize(demos: list[dict]) -> dict:
    """Solver success and token statistics of SoS+ and APR demonstrations."""
    n = max(1, len(demos))
    apr = [row["apr"]["stats"] for row in demos]
    return {
        "problems": len(demos),
        "sosp_solved": round(sum(row["sosp"]["solved"] for row in demos) / n, 3),
        "apr_solved": round(sum(row["apr"]["solved"] for row in demos) / n, 3),
        "sosp_tokens": _quantiles([row["sosp"]["tokens"] for row in demos]),
        "apr_total_tokens": _quantiles([s["total_tokens"] for s in apr]),
        "apr_longest_sequence": _quantiles([s["longest_sequence"] for s in apr]),
        "apr_critical_path": _quantiles([s["critical_path"] for s in apr]),
        "apr_child_threads": _quantiles([s["n_threads"] - 1 for s in apr]),
    }


def summary_table(summary: dict) -> str:
    """A plain-text table comparing SoS+ and APR demonstrations."""
    sosp, rows = summary["sosp_tokens"], []
    rows.append(("solver solves", f"{summary['sosp_solved']:.1%}", f"{summary['apr_solved']:.1%}"))
    for label, key in [("total tokens", "apr_total_tokens"), ("longest sequence", "apr_longest_sequence"),
                       ("critical path", "apr_critical_path")]:
        apr = summary[key]
        rows.append((f"{label} (mean / p90 / max)", f"{sosp['mean']:.0f} / {sosp['p90']} / {sosp['max']}",
                     f"{apr['mean']:.0f} / {apr['p90']} / {apr['max']}"))
    child = summary["apr_child_threads"]
    rows.append(("child threads (mean / max)", "0", f"{child['mean']:.1f} / {child['max']}"))
    widths = [max(len(r[i]) for r in rows + [("", "SoS+", "APR")]) for i in range(3)]
    lines = [f"{'':<{widths[0]}} | {'SoS+':>{widths[1]}} | {'APR':>{widths[2]}}",
             "-" * (sum(widths) + 6)]
    lines += [f"{a:<{widths[0]}} | {b:>{widths[1]}} | {c:>{widths[2]}}" for a, b, c in rows]
    return f"{summary['problems']} problems\n" + "\n".join(lines)


def build_dataset(profile: Profile, out_dir: str | Path, *, workers: int = 1, progress: bool = True,
                  command: str = "") -> dict:
    """Write a profile's problems, demonstrations and SFT rows to ``out_dir``; return the manifest."""
    out = Path(out_dir)
    data = profile.data
    t0 = time.perf_counter()
    train, val, *test = make_splits(profile.task, data.n_train, data.n_val, seed=data.seed, workers=workers,
                                    progress=progress, n_test=data.n_test)
    t1 = time.perf_counter()
    demos_train = demonstrate_all(train, profile.demo, seed=data.seed, split="train",
                                  traces_per_problem=data.traces_per_problem, workers=workers, progress=progress)
    demos_val = demonstrate_all(val, profile.demo, seed=data.seed, split="val", workers=workers, progress=progress)
    t2 = time.perf_counter()
    counts = {
        "problems_train": write_jsonl(out / "problems_train.jsonl", (p.to_dict() for p in train)),
        "problems_val": write_jsonl(out / "problems_val.jsonl", (p.to_dict() for p in val)),
        **({"problems_test": write_jsonl(out / "problems_test.jsonl", (p.to_dict() for p in test[0]))}
           if test else {}),
        "demos_train": write_jsonl(out / "demos_train.jsonl", demos_train),
        "demos_val": write_jsonl(out / "demos_val.jsonl", demos_val),
        "sft_sosp_train": write_jsonl(out / "sft_sosp_train.jsonl", sft_rows_sosp(demos_train)),
        "sft_apr_train": write_jsonl(out / "sft_apr_train.jsonl", sft_rows_apr(demos_train)),
    }
    manifest = {
        "command": command,
        "profile": profile.to_dict(),
        "counts": counts,
        "seconds": {"problems": round(t1 - t0, 2), "demonstrations": round(t2 - t1, 2),
                    "total": round(time.perf_counter() - t0, 2)},
        "summary_train": summarize(demos_train),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_demos(data_dir: str | Path, split: str = "train") -> list[dict]:
    path = Path(data_dir) / f"demos_{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: make it with `python -m apr_mini data --out {data_dir}`")
    return read_jsonl(path)
