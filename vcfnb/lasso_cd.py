"""L1-penalised logistic regression along a lambda path by coordinate descent (glmnet's method).

The objective is glmnet's (``family = "binomial"``, ``standardize = FALSE``, unpenalised
intercept)::

    -loglik(b0, b) / n + lambda * ||b||_1

For every lambda of a descending grid, warm-started from the previous solution: an outer loop
of iteratively reweighted least squares (the quadratic approximation of the log-likelihood at
the current fit, probabilities clamped to [1e-5, 1 - 1e-5]; R glmnet 4.1-6 clamps at
``glmnet.control()$pmin`` = 1e-9, which differs only on near-separated fits, where the path
may then end elsewhere than R's) and an inner loop
of cyclic coordinate descent with soft-thresholding on it — a full pass over every feature,
then passes over the non-zero ones until they settle, then a full pass again until nothing
moves (Friedman, Hastie & Tibshirani 2010, J Stat Softw 33(1), sections 2.6 and 3).

Why here: scikit-learn's liblinear solves every lambda from scratch (no warm start along the
path); a label-permutation test refits a LASSO path hundreds of times (every inner CV fold of
every outer fold of every permutation), which liblinear made the dominant cost of a study. The
loops are compiled with numba (cached on disk after the first call).

Convergence (glmnet's criterion): a pass has converged when ``max_j v_j Δb_j² < tol``
(``v_j = Σ w x_j² / n``: the largest drop of the quadratic objective any coordinate update
made, up to a factor 2; glmnet's default ``thresh`` is 1e-7), the IRLS loop when a whole
quadratic step moved no coefficient by more than that either.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["l1_logistic_path"]

_PMIN = 1e-5  # clamp of fitted probabilities (R glmnet 4.1-6: glmnet.control()$pmin = 1e-9)


@njit(cache=True)
def _cd_pass(Xf, w, r, b, b0, xv, lam, n, p, active_only):
    """One coordinate-descent pass (intercept first); returns (b0, largest scaled change)."""
    big = 0.0
    sw = 0.0
    sr = 0.0
    for i in range(n):
        sw += w[i]
        sr += r[i]
    d = sr / sw
    if d != 0.0:
        b0 += d
        for i in range(n):
            r[i] -= w[i] * d
        ch = sw / n * d * d
        if ch > big:
            big = ch
    for j in range(p):
        bj = b[j]
        if active_only and bj == 0.0:
            continue
        if xv[j] <= 0.0:
            continue
        g = 0.0
        for i in range(n):
            g += Xf[i, j] * r[i]
        u = g / n + xv[j] * bj
        a = abs(u) - lam
        bn = 0.0
        if a > 0.0:
            bn = (a if u > 0.0 else -a) / xv[j]
        if bn != bj:
            delta = bn - bj
            b[j] = bn
            for i in range(n):
                r[i] -= w[i] * Xf[i, j] * delta
            ch = xv[j] * delta * delta
            if ch > big:
                big = ch
    return b0, big


@njit(cache=True)
def _deviance(Xf, y, b, b0, n, p):
    """Binomial deviance of the fit (probabilities clamped like the fit's)."""
    dev = 0.0
    for i in range(n):
        e = b0
        for j in range(p):
            if b[j] != 0.0:
                e += Xf[i, j] * b[j]
        pr = 1.0 / (1.0 + np.exp(-e))
        if pr < _PMIN:
            pr = _PMIN
        elif pr > 1.0 - _PMIN:
            pr = 1.0 - _PMIN
        dev -= 2.0 * (y[i] * np.log(pr) + (1.0 - y[i]) * np.log(1.0 - pr))
    return dev


@njit(cache=True)
def _path(Xf, y, lambdas, b_init, b0_init, tol, max_outer, max_inner, devmax, fdev, mnlam):
    n, p = Xf.shape
    L = lambdas.shape[0]
    n_fit = L
    dev0 = 0.0
    if mnlam > 0:  # null deviance (intercept only) for glmnet's path-stopping rules
        ybar = 0.0
        for i in range(n):
            ybar += y[i]
        ybar = min(max(ybar / n, _PMIN), 1.0 - _PMIN)
        for i in range(n):
            dev0 -= 2.0 * (y[i] * np.log(ybar) + (1.0 - y[i]) * np.log(1.0 - ybar))
    ratio_prev = 0.0
    coefs = np.zeros((L, p))
    inters = np.zeros(L)
    iters = np.zeros(L, dtype=np.int64)
    b = b_init.copy()
    b0 = b0_init
    eta = np.empty(n)
    w = np.empty(n)
    r = np.empty(n)
    xv = np.empty(p)
    for k in range(L):
        lam = lambdas[k]
        n_it = 0
        for _ in range(max_outer):
            # quadratic approximation at the current fit
            for i in range(n):
                eta[i] = b0
            for j in range(p):  # column by column: Xf is Fortran-ordered
                if b[j] != 0.0:
                    for i in range(n):
                        eta[i] += Xf[i, j] * b[j]
            for i in range(n):
                pr = 1.0 / (1.0 + np.exp(-eta[i]))
                if pr < _PMIN:
                    pr = _PMIN
                elif pr > 1.0 - _PMIN:
                    pr = 1.0 - _PMIN
                w[i] = pr * (1.0 - pr)
                r[i] = y[i] - pr  # = w * (z - eta), z the working response
            for j in range(p):
                s = 0.0
                for i in range(n):
                    s += w[i] * Xf[i, j] * Xf[i, j]
                xv[j] = s / n
            b_old = b.copy()
            b0_old = b0
            for _inner in range(max_inner):
                b0, big = _cd_pass(Xf, w, r, b, b0, xv, lam, n, p, False)
                n_it += 1
                if big < tol:
                    break
                for _act in range(max_inner):
                    b0, big = _cd_pass(Xf, w, r, b, b0, xv, lam, n, p, True)
                    n_it += 1
                    if big < tol:
                        break
            sw = 0.0
            for i in range(n):
                sw += w[i]
            moved = sw / n * (b0 - b0_old) ** 2
            for j in range(p):
                m = xv[j] * (b[j] - b_old[j]) ** 2
                if m > moved:
                    moved = m
            if moved < tol:
                break
        coefs[k] = b
        inters[k] = b0
        iters[k] = n_it
        if mnlam > 0 and dev0 > 0.0:
            ratio = 1.0 - _deviance(Xf, y, b, b0, n, p) / dev0
            if k + 1 >= mnlam and (ratio > devmax or (k > 0 and ratio - ratio_prev < fdev)):
                n_fit = k + 1
                break
            ratio_prev = ratio
    return coefs, inters, iters, n_fit


def l1_logistic_path(X, y, lambdas, *, tol: float = 1e-7, max_outer: int = 100,
                     max_inner: int = 10000, coef_init=None, intercept_init=None,
                     stop: bool = False, devmax: float = 0.999, fdev: float = 1e-5,
                     mnlam: int = 5):
    """Coefficients along a descending ``lambdas`` grid (glmnet's objective, see the module).

    ``stop``: glmnet's rules for ending a path it computed its own lambdas for (R:
    ``glmnet.control()`` factory defaults ``devmax`` 0.999, ``fdev`` 1e-5, ``mnlam`` 5): from the
    ``mnlam``-th lambda on, the path ends at the first lambda whose fit explains more than
    ``devmax`` of the null deviance (a near-separated fit) or explains less than ``fdev`` more
    of it than the previous lambda's; that lambda is the last one returned. glmnet applies them
    only to its own lambda sequence (not to user-supplied lambdas, as in ``cv.glmnet``'s fold
    fits), so callers pass ``stop=True`` for the full-data path only.

    Returns
    -------
    (coefs, intercepts, passes)
        ``coefs`` (n_fitted × p), ``intercepts`` (n_fitted,), coordinate-descent passes per
        lambda; ``n_fitted`` = ``len(lambdas)`` unless ``stop`` ended the path early.

    Examples
    --------
    >>> g = np.random.default_rng(0); X = g.normal(size=(200, 5))
    >>> y = (X[:, 0] + g.normal(size=200) > 0).astype(float)
    >>> c, b0, _ = l1_logistic_path(X, y, np.array([0.5, 0.05]))
    >>> (c[0] != 0).sum(), int(np.argmax(np.abs(c[1])))
    (np.int64(0), 0)
    """
    Xf = np.asfortranarray(np.asarray(X, dtype=np.float64))
    yv = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
    lam = np.ascontiguousarray(np.asarray(lambdas, dtype=np.float64).ravel())
    n, p = Xf.shape
    if yv.size != n:
        raise ValueError(f"X has {n} rows but y has {yv.size}")
    if np.any(lam < 0):
        raise ValueError("lambdas must be >= 0")
    if coef_init is None:
        b = np.zeros(p)
    else:
        b = np.asarray(coef_init, dtype=np.float64).ravel().copy()
    if intercept_init is None:
        ybar = float(np.clip(yv.mean(), _PMIN, 1 - _PMIN))
        b0 = float(np.log(ybar / (1 - ybar)))
    else:
        b0 = float(intercept_init)
    coefs, inters, passes, n_fit = _path(Xf, yv, lam, b, b0, float(tol), int(max_outer),
                                         int(max_inner), float(devmax), float(fdev),
                                         int(mnlam) if stop else 0)
    return coefs[:n_fit], inters[:n_fit], passes[:n_fit]
