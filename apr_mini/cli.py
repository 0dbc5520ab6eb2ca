"""What every ``python -m apr_mini`` command shares: argument types whose bad values are one-line
errors, and the command line as it was typed (recorded in each run's metrics)."""

from __future__ import annotations

import argparse
import shlex
import sys


def at_least(low, kind=int):
    """An argparse type: a number of ``kind`` that is at least ``low`` (a bad one is a one-line error)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if value < low or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} >= {low}"
    return parse


COUNT, NON_NEGATIVE = at_least(1), at_least(0)
RATE, TEMPERATURE = at_least(1e-12, float), at_least(0.0, float)
WINDOW = at_least(16)  # a context window smaller than a prompt cannot hold a search


def invocation() -> str:
    """This process's command line as ``python -m apr_mini ...``, quoted so that it can be run again."""
    return "python -m apr_mini " + " ".join(shlex.quote(a) for a in sys.argv[1:])
