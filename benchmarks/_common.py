"""Shared output helpers of the benchmark scripts (not a benchmark itself).

Each script prints its ratios as ``ratio <what>: <value>`` lines (what ``tests/test_benchmarks.py``
looks for) and closes with the load average and one ``FAIL: ...`` line per failed check, exiting
1 if there was one. The scripts run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path`` and they ``from _common import ...``. ``make benchmark`` runs
``benchmarks/[a-z]*.py`` and so skips this file (run as a script, it does nothing).
"""
from __future__ import annotations

import os
from typing import Sequence


def ratio(label: str, value: float) -> None:
    """Print ``ratio <label>: <value>`` (two decimals)."""
    print(f"ratio {label}: {value:.2f}")


def finish(problems: Sequence[str]) -> int:
    """Print the load average at the end and a ``FAIL:`` line per problem; the exit code.

    Returns
    -------
    int
        1 if there is any problem, else 0 (for ``sys.exit``).
    """
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0
