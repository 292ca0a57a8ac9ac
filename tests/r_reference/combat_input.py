"""Write ``combat_input.csv``: the small fixed data set of the ComBat reference values.

Run from this folder (``python combat_input.py``), then ``Rscript combat.R`` writes
``combat_reference.csv``. Deterministic: numpy's PCG64 stream for seed 20261130.

Four batches (A = the reference, 20 rows; B 15; C 12; D 10 = an "external" batch that only the
``*_external`` cases contain), eight features on different scales, covariates ``age`` (numeric)
and ``sex`` (0/1) with real effects on the features, batch shifts and scale factors per feature.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def make(seed: int = 20261130) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    sizes = {"A": 20, "B": 15, "C": 12, "D": 10}
    p = 8
    base = np.array([5.0, 50.0, 0.3, 120.0, -2.0, 10.0, 1.5, 300.0])
    sd = np.array([1.0, 8.0, 0.05, 20.0, 0.7, 3.0, 0.4, 60.0])
    shift = {"A": 0.0, "B": 0.8, "C": -0.6, "D": 1.2}
    scale = {"A": 1.0, "B": 1.4, "C": 0.7, "D": 1.8}
    rows = []
    for b, n in sizes.items():
        age = np.round(g.normal(60, 10, n), 1)
        sex = g.integers(0, 2, n)
        eff = g.normal(0, 0.3, p)  # this batch's per-feature deviation from its mean shift
        z = g.normal(size=(n, p))
        x = (base + sd * (0.04 * (age[:, None] - 60) + 0.5 * sex[:, None])
             + sd * (shift[b] + eff) + sd * scale[b] * z)
        for i in range(n):
            rows.append({"sample": f"{b}{i + 1:02d}", "batch": b, "age": age[i],
                         "sex": int(sex[i]), **{f"f{j + 1}": x[i, j] for j in range(p)}})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    make().to_csv(Path(__file__).with_name("combat_input.csv"), index=False,
                  float_format="%.17g", lineterminator="\n")
