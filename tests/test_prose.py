"""Numbers that notebook prose quotes are held to the shipped data and the package's own constants:
each quote below is the prose's text with the number computed, so a model, sweep or paper figure that
changes fails here until the sentence is rewritten. (Numbers printed by code cells are computed there.)"""

import json
import math
from pathlib import Path

import pytest

from apr_mini.claims import PAPER
from apr_mini.config import get_profile, get_reproduce_config

ROOT = Path(__file__).resolve().parents[1]


def shipped(folder: str) -> dict:
    return json.loads((ROOT / "data" / folder / "metrics.json").read_text())


def sweep_point(name: str) -> dict:
    points = json.loads((ROOT / "data" / "sft-sweep" / "results.json").read_text())["points"]
    return next(p for p in points if p["point"] == name)


def gpu_parameters() -> int:
    import torch
    from transformers import LlamaForCausalLM

    from apr_mini.models import count_parameters, llama_config
    from apr_mini.tokenizer import build_tokenizer

    with torch.device("meta"):  # the shape only: no memory for 231M weights
        return count_parameters(LlamaForCausalLM(llama_config("gpu", build_tokenizer())))


def all_same(p: float, group: int) -> float:
    """The chance that a group of ``group`` trees, each correct with probability ``p``, scores alike."""
    return p ** group + (1 - p) ** group


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


REPRODUCE = get_reproduce_config("cpu")
QUOTES = {
    "03_sft": [
        lambda: f"`gpu` is the paper's size (about {gpu_parameters() / 1e6:.0f}M parameters",
        lambda: f"context short enough ({shipped('cpu-sosp')['task']['context']} tokens)",
        lambda: f"the same {shipped('cpu-sosp')['run']['max_tokens'] / 1e6:.0f}M-token budget",
        lambda: (f"Digit tokens beat integer tokens ({pct(sweep_point('base')['verified_at_7.5M'])} against "
                 f"{pct(sweep_point('integer-tokens')['verified_at_7.5M'])} at 7.5M tokens)"),
    ],
    "04_parallel_inference": [
        lambda: f"a {shipped('tiny-apr')['parameters'] / 1e6:.2f}M-parameter model gains little from batching",
    ],
    "05_grpo": [
        lambda: f"(`data/cpu-apr`, {shipped('cpu-apr')['parameters'] / 1e6:.2f}M parameters)",
        lambda: (f"At a 60% success rate a group of 8 is all-same about {100 * all_same(0.6, 8):.1f}% of the time, "
                 f"a group of 5 about {100 * all_same(0.6, 5):.1f}%"),
        lambda: (f"(paper: {PAPER['rl']['before']}% -> {PAPER['rl']['after']}% accuracy, with "
                 f"{PAPER['rl']['children']:.0f}% more child threads)"),
    ],
    "06_results": [
        lambda: f"({PAPER['context']['apr']}% against {PAPER['context']['sosp']}% at 4k tokens)",
        lambda: f"({PAPER['compute']['apr']}% against {PAPER['compute']['sosp']}% at 20k)",
        lambda: f"matched with {PAPER['compute_saving_vs_pass8']}% less compute",
        lambda: f"({PAPER['latency']['apr']}% against {PAPER['latency']['sosp']}% at about 5 s)",
        lambda: f"RL adds {PAPER['rl']['after'] - PAPER['rl']['before']:.1f} points",
        lambda: (f"with {REPRODUCE.n_problems} problems near 55%, one standard error is about "
                 f"{100 * math.sqrt(0.55 * 0.45 / REPRODUCE.n_problems):.1f} points"),
        lambda: f"training seeds and problems, {REPRODUCE.bootstrap:,} times",
        lambda: (f"raised APR from {PAPER['rl']['before']}% to {PAPER['rl']['after']}% and made it search wider: "
                 f"{PAPER['rl']['children']}% more child threads and {PAPER['rl']['longest_sequence']}% longer sequences"),
    ],
}


def prose(notebook: str) -> str:
    """A notebook's markdown as one text, line breaks read as spaces (a quote may wrap)."""
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return " ".join(" ".join("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("notebook,index", [(nb, i) for nb, quotes in QUOTES.items() for i in range(len(quotes))])
def test_notebook_prose_quotes_the_shipped_numbers(notebook, index):
    quote = " ".join(QUOTES[notebook][index]().split())
    assert quote in prose(notebook), f"{notebook} should say: {quote!r} (the shipped data say so)"


def flat(path: str) -> str:
    return " ".join((ROOT / path).read_text().split())


def test_the_docs_count_the_cpu_tasks_problems_as_the_splits_do():
    """README and docs/training.md say why the 3-number task's GRPO gain is a chosen-on figure."""
    from apr_mini.countdown import problem_space
    from apr_mini.data import load_problems

    space = {p.key for p in problem_space(get_profile("cpu").task)}
    splits = {p.key for name in ("train", "val")
              for p in load_problems(ROOT / "data" / "countdown-cpu" / f"problems_{name}.jsonl")}
    assert f"has {len(space):,} distinct solvable problems, {len(space & splits):,} of them" in flat("README.md")
    assert f"only {len(space - splits)} of its {len(space):,} solvable problems" in flat("docs/training.md")


def test_the_unseen_problems_file_is_the_problems_no_split_holds():
    """data/countdown-cpu/problems_outside.jsonl is what experiments/grpo_unseen.py makes of the
    task, and data/grpo/unseen.json evaluated exactly those problems."""
    import importlib.util

    from apr_mini.data import load_problems

    spec = importlib.util.spec_from_file_location("grpo_unseen", ROOT / "experiments" / "grpo_unseen.py")
    unseen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unseen)
    committed = load_problems(ROOT / "data" / "countdown-cpu" / "problems_outside.jsonl")
    assert committed == unseen.outside_problems()
    splits = {p.key for name in ("train", "val")
              for p in load_problems(ROOT / "data" / "countdown-cpu" / f"problems_{name}.jsonl")}
    assert not splits & {p.key for p in committed}
    report = json.loads((ROOT / "data" / "grpo" / "unseen.json").read_text())
    assert report["n"] == len(committed) and all(pair["n"] == len(committed) for pair in report["pairs"].values())
    # the report holds the script's current pairs, no left-over pair of models it no longer evaluates
    assert set(report["pairs"]) == {f"{sft} -> {grpo}" for pairs in unseen.PAIRS.values() for sft, grpo in pairs}
    assert set(report["apr_minus_sosp_after_grpo"]) == {f"{apr} - {sosp}" for sosp, apr in unseen.ACROSS}
