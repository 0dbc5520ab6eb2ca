"""Does a SoS+ model obey `Token Budget: N`? Its first expansion's width, in the training data and in its own searches.

A SoS+ search spends most of its tokens according to how many nodes it keeps at each expansion (its
beam). The budget-labelled demonstrations tie the two: short budgets come from narrow searches. This
script prints, for each budget, the mean number of nodes the first expansion generates, in the training
data (``runs/cpu/data-budget``, made by ``python -m apr_mini data --profile cpu --budget-prefixes``) and
in the budget model's greedy searches that ``reproduce`` recorded. If the model's width does not move
with the budget, neither can its length.

Run:  python experiments/budget_obedience.py [--data runs/cpu/data-budget] [--records runs/reproduce/cpu/sosp_budget-seed0]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from apr_mini import trace_language as tl

BUDGET = re.compile(re.escape(tl.TOKEN_BUDGET) + r"(\d+)", re.ASCII)
NEXT_NODE = re.compile(r"\n(?:Start Sub Search|Moving to Node)")


def first_expansion_width(search: str) -> int:
    """Nodes generated before the search first moves on (``search`` starts after the root's state line)."""
    return NEXT_NODE.split(search, maxsplit=1)[0].count("Generated Node")


def data_widths(rows: list[dict]) -> dict[int, list[int]]:
    widths = defaultdict(list)
    for row in rows:
        budget = BUDGET.search(row["prompt"])
        if budget:
            widths[int(budget.group(1))].append(first_expansion_width(row["completion"]))
    return widths


def model_widths(records_dir: Path) -> dict[int, list[int]]:
    widths = defaultdict(list)
    for path in sorted(records_dir.glob("budget-*.jsonl")):
        for line in path.read_text().splitlines():
            text = json.loads(line)["tree"]["main_calls"][-1]
            budget = BUDGET.search(text)
            if budget:
                widths[int(budget.group(1))].append(first_expansion_width(text.split("Operations: []", 1)[-1]))
    return widths


def mean(widths: list[int]) -> str:
    return f"{statistics.fmean(widths):.2f}" if widths else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="runs/cpu/data-budget")
    parser.add_argument("--records", default="runs/reproduce/cpu/sosp_budget-seed0")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (Path(args.data) / "sft_sosp_train.jsonl").read_text().splitlines()]
    data, model = data_widths(rows), model_widths(Path(args.records))
    print("| budget | training rows | first expansion (data) | model searches | first expansion (model) |\n|---|---|---|---|---|")
    for budget in sorted(set(data) | set(model)):
        print(f"| {budget} | {len(data[budget])} | {mean(data[budget])} | {len(model[budget])} | {mean(model[budget])} |")


if __name__ == "__main__":
    main()
