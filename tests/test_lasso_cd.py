"""vcfnb.lasso_cd's screening: the screened path is the plain algorithm's bit for bit.

The plain algorithm (``screen=False``) computes every feature's gradient on every full pass and
every ``xv`` on every IRLS step; the screened one skips the gradients of zero coefficients that a
Cauchy-Schwarz bound proves stay zero and reads the gradients of an unmoved residual from its
reference sweep. Both must give the same coefficients, intercepts and pass counts to the bit
(sign of zero included) on every kind of table a study can hand it.
"""
from __future__ import annotations

import numpy as np
import pytest

from vcfnb.lasso_cd import l1_logistic_path


def _table(kind: str, seed: int):
    g = np.random.default_rng(seed)
    n, p = {"tiny": (6, 9), "p1": (30, 1), "p3": (30, 3), "p5": (40, 5)}.get(kind, (48, 260))
    if kind in ("correlated", "shuffled", "separable", "imbalanced", "scales", "duplicates"):
        X = g.normal(size=(n, 6)) @ g.normal(size=(6, p)) + 0.3 * g.normal(size=(n, p))
    else:
        X = g.normal(size=(n, p))
    X = (X - X.mean(0)) / X.std(0)
    y = (X[:, 0] - 0.5 * X[:, -1] + g.normal(size=n) > 0).astype(float)
    if kind == "shuffled":
        y = g.permutation(y)
    elif kind == "separable":
        y = (X[:, 0] > 0).astype(float)
    elif kind == "imbalanced":
        y = (X[:, 0] + 0.5 * g.normal(size=n) > 1.2).astype(float)
    elif kind == "scales":  # not standardised: columns from 1e-3 to 1e3
        X = X * np.geomspace(1e-3, 1e3, p)
    elif kind == "duplicates":
        X[:, 1::7] = X[:, 0:1]
        X[:, 2] = 0.0  # a zero column (xv = 0: never moves)
        X[:, 3] = 1.0  # a constant column
    if y.min() == y.max():
        y[0] = 1.0 - y[0]
    return X, y


KINDS = ["independent", "correlated", "shuffled", "separable", "imbalanced", "scales",
         "duplicates", "tiny", "p1", "p3", "p5"]


def _same(a, b) -> bool:
    return all(np.array_equal(u, v) and np.array_equal(np.signbit(u), np.signbit(v))
               for u, v in zip(a, b))


@pytest.mark.parametrize("kind", KINDS)
def test_screened_path_is_the_plain_path_bit_for_bit(kind):
    for seed in range(2):
        X, y = _table(kind, seed)
        n = X.shape[0]
        lmax = np.abs(X.T @ (y - y.mean())).max() / n
        grids = [lmax * np.geomspace(1, 0.01, 20), np.r_[lmax * np.geomspace(1, 0.05, 8), 0.0]]
        for lam in grids:
            for tol, kw in ((1e-7, {}), (1e-10, {}), (1e-4, {}), (1e-7, {"stop": True})):
                plain = l1_logistic_path(X, y, lam, tol=tol, screen=False, **kw)
                for refresh in (0.0, 0.1, 1.0):
                    fast = l1_logistic_path(X, y, lam, tol=tol, refresh=refresh, **kw)
                    assert _same(plain, fast), (kind, seed, tol, kw, refresh)
        # warm start from a non-zero solution (a fold's refit at a fixed lambda)
        c0 = plain[0][len(plain[0]) // 2]
        b0 = plain[1][len(plain[1]) // 2]
        kw = dict(coef_init=c0, intercept_init=b0, tol=1e-9)
        assert _same(l1_logistic_path(X, y, lam[-3:], screen=False, **kw),
                     l1_logistic_path(X, y, lam[-3:], **kw)), (kind, seed, "warm start")


def test_screened_path_on_a_wide_table_is_still_optimal():
    # the widths the screening is for (n << p): same path as the plain one, and the last
    # lambda's solution satisfies the lasso's optimality conditions
    g = np.random.default_rng(7)
    X = g.normal(size=(70, 12)) @ g.normal(size=(12, 2000)) + 0.5 * g.normal(size=(70, 2000))
    X = (X - X.mean(0)) / X.std(0)
    y = (X[:, 5] + g.normal(size=70) > 0).astype(float)
    lam = np.abs(X.T @ (y - y.mean())).max() / 70 * np.geomspace(1, 0.02, 40)
    plain = l1_logistic_path(X, y, lam, tol=1e-10, screen=False)
    fast = l1_logistic_path(X, y, lam, tol=1e-10)
    assert _same(plain, fast)
    c, b0 = fast[0][-1], fast[1][-1]
    grad = X.T @ (y - 1 / (1 + np.exp(-(X @ c + b0)))) / 70
    nz = c != 0
    assert nz.sum() > 5
    np.testing.assert_allclose(grad[nz], lam[-1] * np.sign(c[nz]), atol=1e-4)
    assert np.all(np.abs(grad[~nz]) <= lam[-1] + 1e-4)


def test_refresh_must_be_a_share():
    with pytest.raises(ValueError, match="refresh"):
        l1_logistic_path(np.eye(4), np.array([0, 1, 0, 1.0]), np.array([0.1]), refresh=2.0)
