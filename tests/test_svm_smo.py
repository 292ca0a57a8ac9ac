"""vcfnb.svm_smo (libsvm's C-SVC solver ported to numba) against libsvm itself, and the forward
selection that uses it against the per-fold libsvm path it replaces.

Every reference here is independent of the port: scikit-learn's private ``_libsvm.fit`` (the
C code the port follows) and the public ``SVC(kernel="precomputed")``; the selection's
reference is its own libsvm path (``_RBFKernelScorer._verified = False``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.svm import SVC, _libsvm

from vcfnb import svm_smo
from vcfnb.selection import SFSSelector, _RBFKernelScorer
from vcfnb.svm_smo import fold_aucs, svc_fit_precomputed


def _libsvm_fit(K, y, C, shrinking=1, max_iter=-1):
    _libsvm.set_verbosity_wrap(0)
    out = _libsvm.fit(np.ascontiguousarray(K), y.astype(np.float64), svm_type=0,
                      kernel="precomputed", C=C, tol=1e-3, cache_size=200, max_iter=max_iter,
                      random_seed=0, shrinking=shrinking)
    return out[0], out[3][0], out[4][0], int(out[-1][0])  # support, sv_coef, intercept, n_iter


def _problem(g, k):
    """Problem ``k``: kernel matrix of n rows (10-90), labels, a train/test split, C.

    Cycles through balanced and imbalanced classes, C in {0.1, 1, 10}, gammas over three
    decades, continuous features, features on a coarse grid (exactly tied kernel values) and
    duplicated rows (identical kernel rows)."""
    n = int(g.integers(10, 91))
    d = int(g.integers(1, 6))
    X = g.normal(size=(n, d))
    kind = k % 3
    if kind == 1:
        X = np.round(X * 2) / 2
    elif kind == 2:
        dup = g.integers(0, n, n // 3)
        X[g.choice(n, n // 3, replace=False)] = X[dup]
    frac = (0.5, 0.3, 0.15)[(k // 3) % 3]
    y = (g.random(n) < frac).astype(int)
    y[:2] = [0, 1]
    C = (0.1, 1.0, 10.0)[(k // 9) % 3]
    gamma = (0.05, 0.5, 5.0)[(k // 27) % 3] / d
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    E = np.exp(-gamma * D)
    perm = g.permutation(n)
    n_tr = max(int(0.85 * n), n - 12)
    tr, te = np.sort(perm[:n_tr]), np.sort(perm[n_tr:])
    for b in (y[tr], y[te]):  # both classes on both sides
        if np.unique(b).size < 2:
            return _problem(g, k)
    return E, y, tr, te, C


def test_port_equals_libsvm_bit_for_bit_on_random_problems():
    """243 problems: support, dual coefficients, intercept and iteration count equal
    libsvm's exactly; decision values equal SVC.decision_function's exactly."""
    g = np.random.default_rng(2024)
    bad, n_shrunk = [], 0
    for k in range(243):
        E, y, tr, te, C = _problem(g, k)
        K_tr = E[np.ix_(tr, tr)]
        sup, dual, b, it = svc_fit_precomputed(K_tr, y[tr], C)
        ref = _libsvm_fit(K_tr, y[tr], C)
        n_shrunk += it > len(tr)  # shrinking runs every l iterations
        if not (np.array_equal(sup, ref[0]) and np.array_equal(dual, ref[1]) and b == ref[2]
                and it == ref[3]):
            bad.append((k, "fit", len(sup), len(ref[0]), it, ref[3]))
            continue
        aucs, dec, amb = fold_aucs(E[None], tr[None], np.array([len(tr)]), te[None],
                                   np.array([len(te)]), y, C)
        want = SVC(kernel="precomputed", C=C).fit(K_tr, y[tr]).decision_function(E[np.ix_(te, tr)])
        if not np.array_equal(dec[0, :len(te)], want):
            bad.append((k, "decision", float(np.abs(dec[0, :len(te)] - want).max())))
        diff = want[y[te] == 1][:, None] - want[y[te] == 0][None, :]
        if aucs[0] != ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size:
            bad.append((k, "auc"))
    assert not bad, bad
    assert n_shrunk >= 20  # the shrinking and unshrinking code ran, not only the plain loop


@pytest.mark.parametrize("shrinking, max_iter", [(0, -1), (1, 1), (1, 7), (0, 30)])
def test_port_equals_libsvm_without_shrinking_and_at_max_iter(shrinking, max_iter):
    g = np.random.default_rng(7)
    for k in range(40):
        E, y, tr, _, C = _problem(g, k)
        K_tr = E[np.ix_(tr, tr)]
        sup, dual, b, it = svc_fit_precomputed(K_tr, y[tr], C, shrinking=bool(shrinking),
                                               max_iter=max_iter)
        ref = _libsvm_fit(K_tr, y[tr], C, shrinking=shrinking, max_iter=max_iter)
        assert np.array_equal(sup, ref[0]) and np.array_equal(dual, ref[1]), k
        assert b == ref[2] and it == ref[3], k


def test_port_input_checks():
    K = np.eye(4)
    with pytest.raises(ValueError, match="square"):
        svc_fit_precomputed(K[:3], [0, 1, 0])
    with pytest.raises(ValueError, match="both labels"):
        svc_fit_precomputed(K, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="both labels"):
        svc_fit_precomputed(K, [0, 1, 2, 1])


def _table(seed: int, n: int = 70, p: int = 120, discrete: bool = False):
    g = np.random.default_rng(seed)
    X = pd.DataFrame(g.normal(size=(n, p)), columns=[f"f{i}" for i in range(p)])
    if discrete:  # ties: half the columns on a coarse grid, a quarter binary
        X.iloc[:, ::2] = np.round(X.iloc[:, ::2] * 2) / 2
        X.iloc[:, 1::4] = (X.iloc[:, 1::4] > 0).astype(float)
    y = (X["f0"] - X["f1"] + g.normal(size=n) > 0).astype(int)
    return X, y


def _histories(X, y, monkeypatch, **kw):
    """History of the compiled path (first use checked again) and of the libsvm path."""
    args = dict(n_splits=10, n_repeats=1, max_features=6, random_state=0) | kw
    monkeypatch.setattr(_RBFKernelScorer, "_verified", None)
    fast = SFSSelector(**args).fit(X, y)
    assert _RBFKernelScorer._verified is True
    monkeypatch.setattr(_RBFKernelScorer, "_verified", False)
    slow = SFSSelector(**args).fit(X, y)
    return fast.history_, slow.history_


def test_sfs_history_identical_to_the_libsvm_path(monkeypatch):
    X, y = _table(0)
    fast, slow = _histories(X, y, monkeypatch)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert {"f0", "f1"} <= set(fast.loc[fast.accepted, "feature"])


def test_sfs_history_identical_with_tied_decision_values(monkeypatch):
    """Discrete columns tie test rows: those folds are scored again by the libsvm path's BLAS
    sum (which can order tied rows by their last bits), so the histories still agree."""
    seen = []

    def counting(*a, **k):
        out = fold_aucs(*a, **k)
        seen.append(int(out[2].sum()))
        return out

    monkeypatch.setattr(svm_smo, "fold_aucs", counting)
    X, y = _table(1, p=80, discrete=True)
    fast, slow = _histories(X, y, monkeypatch, max_features=5, random_state=1)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert sum(seen) > 0  # the near-tie path ran


def test_sfs_falls_back_to_libsvm_when_the_first_use_check_fails(monkeypatch):
    def wrong(*a, **k):
        aucs, dec, amb = fold_aucs(*a, **k)
        return aucs, dec + 1e-3, amb

    X, y = _table(2, p=30)
    args = dict(n_splits=5, n_repeats=1, max_features=3, random_state=0)
    monkeypatch.setattr(_RBFKernelScorer, "_verified", False)
    want = SFSSelector(**args).fit(X, y).history_
    monkeypatch.setattr(svm_smo, "fold_aucs", wrong)
    monkeypatch.setattr(_RBFKernelScorer, "_verified", None)
    got = SFSSelector(**args).fit(X, y).history_
    assert _RBFKernelScorer._verified is False
    pd.testing.assert_frame_equal(got, want, check_exact=True)
