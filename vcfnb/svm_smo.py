"""C-SVC on a precomputed kernel: libsvm's SMO solver as scikit-learn bundles it, in numba.

A step-by-step port of ``Solver::Solve`` (C-SVC case) of the libsvm inside scikit-learn
(``sklearn/svm/src/libsvm/svm.cpp``, read at scikit-learn 1.9.1), so that a fit returns the
support, dual coefficients and intercept of ``sklearn.svm._libsvm.fit(K, y, svm_type=0,
kernel="precomputed", C=C, tol=1e-3, cache_size=200, max_iter=-1, random_seed=0)`` bit for bit
(``tests/test_svm_smo.py`` checks it against libsvm). What is reproduced, because each of it
can change the last bits or break a tie another way:

* the problem as libsvm builds it (its ``l`` rows are ``n`` here): rows grouped by class,
  labels sorted ascending (scikit-learn's change to libsvm: class 0 is ``y = +1``),
  ``p = -1``, ``C_i = C``;
* ``Qfloat`` is ``float``: ``Q_ij = (float)(y_i y_j K_ij)`` in single precision, ``QD_i = K_ii``
  in double; every expression is evaluated as libsvm evaluates it (operand order, single or
  double precision, no fused multiply-add: numba does not contract without ``fastmath``);
* working-set selection with second-order information (``TAU = 1e-12``; ties: the last index
  reaching the maximum / minimum, as libsvm's ``>=`` / ``<=`` scans give), the update of the two
  alphas with libsvm's clipping, the updates of ``G`` and ``G_bar``;
* shrinking: ``counter = min(l, 1000) + 1``, ``do_shrinking`` / ``be_shrunk``, the unshrink at
  ``10 eps``, ``reconstruct_gradient`` with both of its loop orders, and ``swap_index``: the
  active set is permuted exactly as libsvm permutes it. The rows and columns of a full ``Q``
  matrix are swapped where libsvm swaps its kernel cache (which only stores those values);
* ``max_iter``, ``calculate_rho`` and the output: ``alpha_i y_i`` of the non-zero alphas in
  grouped order (libsvm's ``sv_coef``), the support's row indices, intercept ``-rho``.

Speed (same arithmetic): each loop of ``select_working_set`` is split into an elementwise pass
without data-dependent branches, which the compiler vectorises, and a scan for the maximum and
its last index; the small helpers are inlined.

:func:`fold_aucs` fits one SVM per cross-validation fold from a stack of kernel matrices and
scores each fold's test rows by the pairwise AUC: the inner loop of
:class:`vcfnb.selection.SFSSelector`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fold_aucs", "svc_fit_precomputed"]

_LOWER, _UPPER, _FREE = 0, 1, 2
_TAU = 1e-12
_INF = np.inf
_EPS = 2.220446049250313e-16  # float64 machine epsilon


@njit(cache=True, inline="always")
def _status(a, c):
    if a >= c:
        return _UPPER
    if a <= 0:
        return _LOWER
    return _FREE


@njit(cache=True, inline="always")
def _swap(Q, QD, y, G, st, alpha, p, aset, Gbar, C, i, j):
    """``Solver::swap_index``: positions ``i`` and ``j`` trade everything."""
    n = Q.shape[0]
    for k in range(n):  # rows, then columns (the Q matrix in position order)
        t = Q[i, k]
        Q[i, k] = Q[j, k]
        Q[j, k] = t
    for k in range(n):
        t = Q[k, i]
        Q[k, i] = Q[k, j]
        Q[k, j] = t
    QD[i], QD[j] = QD[j], QD[i]
    y[i], y[j] = y[j], y[i]
    G[i], G[j] = G[j], G[i]
    st[i], st[j] = st[j], st[i]
    alpha[i], alpha[j] = alpha[j], alpha[i]
    p[i], p[j] = p[j], p[i]
    aset[i], aset[j] = aset[j], aset[i]
    Gbar[i], Gbar[j] = Gbar[j], Gbar[i]
    C[i], C[j] = C[j], C[i]


@njit(cache=True, inline="always")
def _reconstruct_gradient(Q, G, st, alpha, p, Gbar, active_size, n):
    if active_size == n:
        return
    for j in range(active_size, n):
        G[j] = Gbar[j] + p[j]
    nr_free = 0
    for j in range(active_size):
        if st[j] == _FREE:
            nr_free += 1
    if nr_free * n > 2 * active_size * (n - active_size):
        for i in range(active_size, n):
            for j in range(active_size):
                if st[j] == _FREE:
                    G[i] += alpha[j] * Q[i, j]
    else:
        for i in range(active_size):
            if st[i] == _FREE:
                ai = alpha[i]
                for j in range(active_size, n):
                    G[j] += ai * Q[i, j]


@njit(cache=True, inline="always")
def _max(buf, n):
    """Largest of ``buf[:n]`` (``-inf`` if empty), from four running maxima so that the compares
    do not wait on each other. The maximum of finite numbers and ``-inf`` does not depend on
    the order of the compares, except for which zero comes back when ``+0.0`` and ``-0.0`` tie;
    no caller can tell (they add it to a number, compare it, or look for an equal entry)."""
    m0 = -_INF
    m1 = -_INF
    m2 = -_INF
    m3 = -_INF
    n4 = n - n % 4
    for t in range(0, n4, 4):
        a = buf[t]
        b = buf[t + 1]
        c = buf[t + 2]
        d = buf[t + 3]
        m0 = a if a > m0 else m0
        m1 = b if b > m1 else m1
        m2 = c if c > m2 else m2
        m3 = d if d > m3 else m3
    for t in range(n4, n):
        a = buf[t]
        m0 = a if a > m0 else m0
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    return m2 if m2 > m0 else m0


@njit(cache=True, inline="always")
def _last_index(buf, n, value):
    """Largest ``t < n`` with ``buf[t] == value`` (-1 if none)."""
    idx = -1
    for t in range(n):
        c = t if buf[t] == value else -1
        idx = c if c > idx else idx
    return idx


@njit(cache=True, inline="always")
def _select_working_set(Q, QD, y, G, st, active_size, eps, vbuf, obuf):
    """Returns ``(1, -1, -1)`` when optimal, else ``(0, i, j)``.

    libsvm's two loops, each split into an elementwise pass (no branches on the data, so the
    compiler vectorises it; scratch arrays ``vbuf``/``obuf``) and a scan. Same result: libsvm
    keeps the last index reaching the running maximum of ``-y_t G_t`` over I_up (``>=``), which
    is the last index reaching the overall maximum; likewise the last index reaching the
    minimum of ``obj_diff`` (``<=``). Every value is computed as libsvm computes it (``y`` is
    ±1.0, so ``y_j G_j`` is ``G_j`` or ``-G_j`` exactly, and ``a - y_j b`` is libsvm's
    ``a - b`` or ``a + b``); ``G`` is finite, so ``±inf`` marks the positions a loop skips.
    """
    # i: maximises -y_t G_t over I_up (t not at the bound its label pushes it to)
    for t in range(active_size):
        v = -(y[t] * G[t])
        blocked = _UPPER if y[t] > 0 else _LOWER
        vbuf[t] = v if st[t] != blocked else -_INF
    Gmax = _max(vbuf, active_size)
    Gmax_idx = _last_index(vbuf, active_size, Gmax) if Gmax > -_INF else -1
    i = Gmax_idx
    ii = 0  # row 0 is never used when i = -1 (then Gmax = -inf and no grad_diff is > 0)
    yi = 0.0
    QDi = 0.0
    if i != -1:
        ii = i
        yi = y[i]
        QDi = QD[i]
    # j: minimises obj_diff over I_low with grad_diff > 0; Gmax2 = max y_j G_j over I_low
    for j in range(active_size):
        w = y[j] * G[j]
        blocked = _LOWER if y[j] > 0 else _UPPER
        low = st[j] != blocked
        grad_diff = Gmax + w
        quad_coef = (QDi + QD[j]) - y[j] * (2.0 * yi * np.float64(Q[ii, j]))
        den = quad_coef if quad_coef > 0 else _TAU
        obj_diff = -(grad_diff * grad_diff) / den
        vbuf[j] = w if low else -_INF
        obuf[j] = -obj_diff if (low and grad_diff > 0) else -_INF
    Gmax2 = _max(vbuf, active_size)
    best = _max(obuf, active_size)  # -(the smallest obj_diff)
    Gmin_idx = _last_index(obuf, active_size, best) if best > -_INF else -1
    if Gmax + Gmax2 < eps or Gmin_idx == -1:
        return 1, -1, -1
    return 0, Gmax_idx, Gmin_idx


@njit(cache=True, inline="always")
def _be_shrunk(y, G, st, i, Gmax1, Gmax2):
    if st[i] == _UPPER:
        if y[i] == 1:
            return -G[i] > Gmax1
        return -G[i] > Gmax2
    if st[i] == _LOWER:
        if y[i] == 1:
            return G[i] > Gmax2
        return G[i] > Gmax1
    return False


@njit(cache=True, inline="always")
def _do_shrinking(Q, QD, y, G, st, alpha, p, aset, Gbar, C, active_size, n, eps, unshrink):
    """Returns the new ``(active_size, unshrink)``."""
    Gmax1 = -_INF
    Gmax2 = -_INF
    for i in range(active_size):
        if y[i] == 1:
            if st[i] != _UPPER:
                if -G[i] >= Gmax1:
                    Gmax1 = -G[i]
            if st[i] != _LOWER:
                if G[i] >= Gmax2:
                    Gmax2 = G[i]
        else:
            if st[i] != _UPPER:
                if -G[i] >= Gmax2:
                    Gmax2 = -G[i]
            if st[i] != _LOWER:
                if G[i] >= Gmax1:
                    Gmax1 = G[i]
    if (not unshrink) and Gmax1 + Gmax2 <= eps * 10:
        unshrink = True
        _reconstruct_gradient(Q, G, st, alpha, p, Gbar, active_size, n)
        active_size = n
    i = 0
    while i < active_size:
        if _be_shrunk(y, G, st, i, Gmax1, Gmax2):
            active_size -= 1
            while active_size > i:
                if not _be_shrunk(y, G, st, active_size, Gmax1, Gmax2):
                    _swap(Q, QD, y, G, st, alpha, p, aset, Gbar, C, i, active_size)
                    break
                active_size -= 1
        i += 1
    return active_size, unshrink


@njit(cache=True, inline="always")
def _calculate_rho(y, G, st, active_size):
    nr_free = 0
    ub = _INF
    lb = -_INF
    sum_free = 0.0
    for i in range(active_size):
        yG = y[i] * G[i]
        if st[i] == _UPPER:
            if y[i] == -1:
                ub = ub if ub < yG else yG
            else:
                lb = lb if lb > yG else yG
        elif st[i] == _LOWER:
            if y[i] == 1:
                ub = ub if ub < yG else yG
            else:
                lb = lb if lb > yG else yG
        else:
            nr_free += 1
            sum_free += yG
    if nr_free > 0:
        return sum_free / nr_free
    return (ub + lb) / 2


@njit(cache=True)
def _solve(Q, QD, y, C, eps, shrinking, max_iter):
    """``Solver::Solve`` for C-SVC from ``alpha = 0``, ``p = -1``.

    ``Q`` (float32, n × n, position order), ``QD``, ``y`` (±1.0) and ``C`` are permuted in
    place. Returns ``(alpha, rho, n_iter)`` with ``alpha`` in the input order.
    """
    n = Q.shape[0]
    p = np.full(n, -1.0)
    alpha = np.zeros(n)
    st = np.empty(n, dtype=np.int8)
    for i in range(n):
        st[i] = _status(alpha[i], C[i])
    aset = np.arange(n)
    active_size = n
    G = p.copy()  # alpha = 0: every alpha at its lower bound, G = p, G_bar = 0
    Gbar = np.zeros(n)
    vbuf = np.empty(n)
    obuf = np.empty(n)
    unshrink = False
    it = 0
    counter = min(n, 1000) + 1
    while True:
        if max_iter != -1 and it >= max_iter:
            break
        counter -= 1
        if counter == 0:
            counter = min(n, 1000)
            if shrinking:
                active_size, unshrink = _do_shrinking(Q, QD, y, G, st, alpha, p, aset, Gbar, C,
                                                      active_size, n, eps, unshrink)
        done, i, j = _select_working_set(Q, QD, y, G, st, active_size, eps, vbuf, obuf)
        if done != 0:
            _reconstruct_gradient(Q, G, st, alpha, p, Gbar, active_size, n)
            active_size = n
            done, i, j = _select_working_set(Q, QD, y, G, st, active_size, eps, vbuf, obuf)
            if done != 0:
                break
            counter = 1
        it += 1

        C_i = C[i]
        C_j = C[j]
        old_alpha_i = alpha[i]
        old_alpha_j = alpha[j]
        Q2 = np.float64(np.float32(2) * Q[i, j])  # libsvm's 2*Q_i[j]: a float product
        if y[i] != y[j]:
            quad_coef = QD[i] + QD[j] + Q2
            if quad_coef <= 0:
                quad_coef = _TAU
            delta = (-G[i] - G[j]) / quad_coef
            diff = alpha[i] - alpha[j]
            alpha[i] += delta
            alpha[j] += delta
            if diff > 0:
                if alpha[j] < 0:
                    alpha[j] = 0.0
                    alpha[i] = diff
            else:
                if alpha[i] < 0:
                    alpha[i] = 0.0
                    alpha[j] = -diff
            if diff > C_i - C_j:
                if alpha[i] > C_i:
                    alpha[i] = C_i
                    alpha[j] = C_i - diff
            else:
                if alpha[j] > C_j:
                    alpha[j] = C_j
                    alpha[i] = C_j + diff
        else:
            quad_coef = QD[i] + QD[j] - Q2
            if quad_coef <= 0:
                quad_coef = _TAU
            delta = (G[i] - G[j]) / quad_coef
            sm = alpha[i] + alpha[j]
            alpha[i] -= delta
            alpha[j] += delta
            if sm > C_i:
                if alpha[i] > C_i:
                    alpha[i] = C_i
                    alpha[j] = sm - C_i
            else:
                if alpha[j] < 0:
                    alpha[j] = 0.0
                    alpha[i] = sm
            if sm > C_j:
                if alpha[j] > C_j:
                    alpha[j] = C_j
                    alpha[i] = sm - C_j
            else:
                if alpha[i] < 0:
                    alpha[i] = 0.0
                    alpha[j] = sm

        dai = alpha[i] - old_alpha_i
        daj = alpha[j] - old_alpha_j
        for k in range(active_size):
            G[k] += np.float64(Q[i, k]) * dai + np.float64(Q[j, k]) * daj

        ui = st[i] == _UPPER
        uj = st[j] == _UPPER
        st[i] = _status(alpha[i], C[i])
        st[j] = _status(alpha[j], C[j])
        if ui != (st[i] == _UPPER):
            if ui:
                for k in range(n):
                    Gbar[k] -= C_i * np.float64(Q[i, k])
            else:
                for k in range(n):
                    Gbar[k] += C_i * np.float64(Q[i, k])
        if uj != (st[j] == _UPPER):
            if uj:
                for k in range(n):
                    Gbar[k] -= C_j * np.float64(Q[j, k])
            else:
                for k in range(n):
                    Gbar[k] += C_j * np.float64(Q[j, k])

    rho = _calculate_rho(y, G, st, active_size)
    out = np.empty(n)
    for i in range(n):
        out[aset[i]] = alpha[i]
    return out, rho, it


@njit(cache=True)
def _fit_sub(K, rows, n_rows, y01, C, eps, shrinking, max_iter, perm, coef):
    """C-SVC on ``K[rows[:n_rows]][:, rows[:n_rows]]`` with 0/1 labels ``y01[rows]``.

    Fills ``perm[:n_rows]`` (positions within ``rows``, libsvm's class grouping: label 0 first)
    and ``coef[:n_rows]`` (``alpha_i y_i`` in that order, 0 off the support); returns
    ``(rho, n_iter)``.
    """
    n = n_rows
    k = 0
    for a in range(n):
        if y01[rows[a]] == 0:
            perm[k] = a
            k += 1
    n0 = k  # rows of class 0 (y = +1), first in the grouped order
    for a in range(n):
        if y01[rows[a]] != 0:
            perm[k] = a
            k += 1
    idx = np.empty(n, dtype=np.uint64)  # unsigned: no negative-index wraparound in the gather
    for a in range(n):
        idx[a] = rows[perm[a]]
    # Q_ab = (float)(y_a y_b K_ab): the sign flips exactly, so (float)(-K) = -(float)K
    Q = np.empty((n, n), dtype=np.float32)
    QD = np.empty(n)
    for a in range(n):
        ra = idx[a]
        QD[a] = K[ra, ra]
        sa = np.float32(1.0) if a < n0 else np.float32(-1.0)
        for b in range(n0):
            Q[a, b] = np.float32(K[ra, idx[b]]) * sa
        for b in range(n0, n):
            Q[a, b] = np.float32(K[ra, idx[b]]) * -sa
    y = np.empty(n)
    for a in range(n):
        y[a] = 1.0 if a < n0 else -1.0
    alpha, rho, it = _solve(Q, QD, y.copy(), np.full(n, C), eps, shrinking, max_iter)
    for a in range(n):
        coef[a] = alpha[a] * y[a]  # libsvm's sv_coef: alpha_i y_i
    return rho, it


@njit(cache=True)
def _fit_one(K, y01, C, eps, shrinking, max_iter):
    """:func:`_fit_sub` on all rows of ``K``; returns ``(perm, coef, rho, n_iter)``."""
    n = K.shape[0]
    rows = np.arange(n)
    perm = np.empty(n, dtype=np.int64)
    coef = np.empty(n)
    rho, it = _fit_sub(K, rows, n, y01, C, eps, shrinking, max_iter, perm, coef)
    return perm, coef, rho, it


def svc_fit_precomputed(K, y, C: float = 1.0, *, tol: float = 1e-3, shrinking: bool = True,
                        max_iter: int = -1):
    """Fit a C-SVC on a precomputed kernel as ``sklearn.svm._libsvm.fit`` does (binary 0/1).

    Parameters
    ----------
    K : array (n, n)
        Kernel matrix of the training rows.
    y : array (n,)
        Labels 0/1 (both present).
    C, tol, shrinking, max_iter
        libsvm's ``C``, ``eps``, ``shrinking`` and ``max_iter`` (-1: no limit).

    Returns
    -------
    (support, dual_coef, intercept, n_iter)
        ``support`` the row indices of the support vectors in libsvm's order (class 0 first),
        ``dual_coef`` their ``alpha_i y_i`` (libsvm's ``sv_coef``), ``intercept = -rho``; the
        decision value of a row with kernel values ``k`` (one per training row) is
        ``-(k[support] @ dual_coef + intercept)``, as ``SVC.decision_function``.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [3.0], [4.0]])
    >>> K = np.exp(-((X - X.T) ** 2))
    >>> sup, dual, b, _ = svc_fit_precomputed(K, np.array([0, 0, 1, 1]))
    >>> sup.tolist(), np.sign(dual).tolist()
    ([0, 1, 2, 3], [1.0, 1.0, -1.0, -1.0])
    """
    K = np.ascontiguousarray(K, dtype=np.float64)
    y01 = np.asarray(y).astype(np.int64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or y01.shape != (K.shape[0],):
        raise ValueError("K must be square with one label per row")
    if not np.isin(y01, (0, 1)).all() or np.unique(y01).size != 2:
        raise ValueError("y must hold both labels 0 and 1 and nothing else")
    perm, coef, rho, it = _fit_one(K, y01, float(C), float(tol), bool(shrinking), int(max_iter))
    nz = np.abs(coef) > 0
    return (perm[nz].astype(np.int32), coef[nz], (-rho if rho != 0 else 0.0), int(it))


@njit(cache=True)
def _fold_aucs(E, tr, ntr, te, nte, y01, C, eps, shrinking, max_iter, dec, amb):
    """:func:`fold_aucs`' loop; fills ``dec`` and ``amb``, returns the AUCs."""
    n_folds = E.shape[0]
    aucs = np.empty(n_folds)
    mtr = tr.shape[1]
    perm = np.empty(mtr, dtype=np.int64)
    coef = np.empty(mtr)
    bound = np.empty(te.shape[1])
    for f in range(n_folds):
        K = E[f]
        n = ntr[f]
        rho, _ = _fit_sub(K, tr[f], n, y01, C, eps, shrinking, max_iter, perm, coef)
        intercept = -rho if rho != 0 else 0.0
        nsv = 0
        for a in range(n):
            if abs(coef[a]) > 0:
                nsv += 1
        for t in range(nte[f]):
            r = te[f, t]
            s = 0.0
            m = 0.0
            for a in range(n):  # libsvm's predict order: the support in grouped order
                c = coef[a]
                if abs(c) > 0:
                    v = K[r, tr[f, perm[a]]] * c
                    s += v
                    m += abs(v)
            dec[f, t] = -(s + intercept)
            # how far another summation order (BLAS) can move this value: far above it
            bound[t] = 4.0 * (nsv + 2) * _EPS * (m + abs(intercept))
        gt = 0
        eq = 0
        npos = 0
        nneg = 0
        close = False
        for t in range(nte[f]):
            if y01[te[f, t]] == 1:
                npos += 1
                for u in range(nte[f]):
                    if y01[te[f, u]] != 1:
                        d = dec[f, t] - dec[f, u]
                        if d > 0:
                            gt += 1
                        elif d == 0:
                            eq += 1
                        if abs(d) <= bound[t] + bound[u]:
                            close = True
            else:
                nneg += 1
        amb[f] = close
        aucs[f] = (gt + 0.5 * eq) / (npos * nneg) if npos * nneg > 0 else np.nan
    return aucs


def fold_aucs(E, tr, ntr, te, nte, y, C: float = 1.0, *, tol: float = 1e-3):
    """Pairwise test AUC of a C-SVC (libsvm's, see the module) per cross-validation fold.

    Parameters
    ----------
    E : float64 array (n_folds, n, n)
        Kernel values between all rows, one matrix per fold.
    tr, te : int arrays (n_folds, max_len)
        Training and test rows of each fold (row indices into ``E``), padded; the first
        ``ntr[f]`` / ``nte[f]`` entries of row ``f`` count.
    ntr, nte : int arrays (n_folds,)
    y : int array (n,)
        Labels 0/1; every fold needs both classes in its training and test rows.
    C, tol : float
        libsvm's ``C`` and ``eps``.

    Returns
    -------
    (aucs, dec, ambiguous)
        ``aucs[f] = (#(pos > neg) + 0.5 #ties) / (n_pos n_neg)`` over the test pairs of fold
        ``f``; ``dec[f, :nte[f]]`` the decision values (``SVC.decision_function``'s: the
        support summed in libsvm's order); ``ambiguous[f]`` True when a positive and a
        negative decision value of the fold are so close (or tied) that another summation
        order of the same support (e.g. a BLAS matrix-vector product) could order them
        differently.

    Examples
    --------
    >>> X = np.array([0.0, 1.0, 3.0, 4.0, 0.5, 3.5])
    >>> E = np.exp(-(X[:, None] - X[None, :]) ** 2)[None]
    >>> aucs, dec, amb = fold_aucs(E, np.array([[0, 1, 2, 3]]), np.array([4]),
    ...                            np.array([[4, 5]]), np.array([2]), np.array([0, 0, 1, 1, 0, 1]))
    >>> float(aucs[0]), bool(amb[0])
    (1.0, False)
    """
    E = np.ascontiguousarray(E, dtype=np.float64)
    tr = np.ascontiguousarray(tr, dtype=np.int64)
    te = np.ascontiguousarray(te, dtype=np.int64)
    ntr = np.ascontiguousarray(ntr, dtype=np.int64)
    nte = np.ascontiguousarray(nte, dtype=np.int64)
    y01 = np.ascontiguousarray(y, dtype=np.int64)
    dec = np.zeros((E.shape[0], te.shape[1]))
    amb = np.zeros(E.shape[0], dtype=np.bool_)
    aucs = _fold_aucs(E, tr, ntr, te, nte, y01, float(C), float(tol), True, -1, dec, amb)
    return aucs, dec, amb
