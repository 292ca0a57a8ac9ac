"""Recovery check: could this design find a real effect of a given size at this sample size?

The permutation test is the negative control (no effect → no finding). The recovery check is the
positive control on the user's own cohort: it keeps the real features, draws a random half of the
patients, labels them positive (the other half negative), shifts chosen features of the positive
half by ``d`` standard deviations, and reruns the study's whole pipeline on these planted labels.
A pipeline that recovers ``d = 1`` (AUC ≥ 0.7 and permutation p < 0.05) and not ``d = 0`` is able
to see an effect of that size; the share of draws in which it does is the design's power.

Examples
--------
>>> import numpy as np, pandas as pd
>>> X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=list("abc"))
>>> Xp, y = plant_effect(X, 1.0, features=["a"], rng=0)
>>> int(y.sum()), round(float(Xp.loc[y == 1, "a"].mean() - X.loc[y == 1, "a"].mean()), 6) > 0
(20, True)
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from vcfnb.rng import RNGLike, generator

__all__ = ["plant_effect", "recovery_check", "default_features"]


def default_features(columns: Sequence[str]) -> list[str]:
    """The ROI-intensity features an effect is planted into by default: first-order mean and
    median of every image type and sequence (``…firstorder_Mean``, ``…firstorder_Median``)."""
    return [c for c in columns if re.search(r"firstorder_(Mean|Median)$", str(c))]


def plant_effect(X: pd.DataFrame, d: float, *, features: Sequence[str] | None = None,
                 fraction: float = 0.5, rng: RNGLike = None) -> tuple[pd.DataFrame, pd.Series]:
    """Relabel a random ``fraction`` of the rows positive and shift ``features`` of those rows by
    ``d`` standard deviations (SD of each feature over all rows).

    Returns
    -------
    (DataFrame, Series)
        The planted feature table (a copy) and the planted 0/1 labels (index of ``X``).
    """
    cols = list(features) if features is not None else default_features(X.columns)
    if not cols:
        raise ValueError("no feature to plant the effect into: name them with features=")
    missing = [c for c in cols if c not in X.columns]
    if missing:
        raise ValueError(f"features not in the table: {missing[:5]}")
    g = generator(rng)
    n = len(X)
    k = int(round(fraction * n))
    if not 0 < k < n:
        raise ValueError(f"fraction {fraction} leaves one class empty for {n} rows")
    y = np.zeros(n, dtype=int)
    y[g.permutation(n)[:k]] = 1
    out = X.copy()
    sd = X[cols].std(ddof=1).replace(0, np.nan).fillna(1.0)
    out.loc[y == 1, cols] = X.loc[y == 1, cols] + float(d) * sd.to_numpy()
    return out, pd.Series(y, index=X.index, name="planted")


def recovery_check(estimator: Any, X: pd.DataFrame, *, effects: Sequence[float] = (0.0, 1.0),
                   features: Sequence[str] | None = None, n_draws: int = 3, cv: Any = 5,
                   n_permutations: int = 39, alpha: float = 0.05, min_auc: float = 0.7,
                   rng: RNGLike = None, n_jobs: int = 1) -> pd.DataFrame:
    """Plant effects of size ``effects`` (SD units) and rerun the whole pipeline on each draw.

    Each draw plants with :func:`plant_effect` and runs
    :func:`vcfnb.models.permutation_test` (CV design, ``cv`` folds, ``n_permutations``) of the
    complete ``estimator``, so selection and tuning refit inside every fold as in the study.

    Returns
    -------
    DataFrame
        One row per effect and draw: ``d, draw, auc, p_value, n_permutations, recovered``
        (``auc >= min_auc and p_value < alpha``: with p = (1 + #null ≥ observed) / (1 + n),
        39 permutations can reach p = 0.025 < 0.05; 19 cannot go below 0.05); ``power`` per effect is the mean of
        ``recovered`` (see :func:`summary`).
    """
    from vcfnb.models import permutation_test

    g = generator(rng)
    rows = []
    for d in effects:
        for draw in range(int(n_draws)):
            Xp, y = plant_effect(X, d, features=features, rng=g)
            res = permutation_test(estimator, Xp, y.to_numpy(), cv=cv,
                                   n_permutations=n_permutations, rng=g, n_jobs=n_jobs)
            rows.append({"d": float(d), "draw": draw, "auc": res.observed_auc,
                         "p_value": res.p_value, "n_permutations": res.n_permutations,
                         "recovered": bool(res.observed_auc >= min_auc and res.p_value < alpha)})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per effect size: mean AUC, share of draws recovered (the design's power), draws."""
    return (table.groupby("d").agg(mean_auc=("auc", "mean"), power=("recovered", "mean"),
                                   draws=("draw", "count")).reset_index())


__all__ += ["summary"]
