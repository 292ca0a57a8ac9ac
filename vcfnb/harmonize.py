"""Batch harmonisation of feature tables: ComBat as a scikit-learn transformer.

:class:`ComBat` removes additive and multiplicative centre/scanner ("batch") effects from a
patients × features table with the empirical-Bayes location/scale model of Johnson et al.
(2007), optionally with a reference batch that is left unchanged (M-ComBat, Stein et al. 2015)
and covariates whose effects are preserved. It follows the conventions of the reference
implementation, R ``sva::ComBat`` (Bioconductor ``sva`` 3.46), and equals it to 1e-6 in
``tests/test_harmonize.py`` (reference values committed in ``tests/r_reference/``).

The model, per feature ``g``, sample ``j`` in batch ``i``, covariates ``c_j``::

    x_ijg = alpha_g + c_j' beta_g + gamma_ig + delta_ig * eps_ijg

* ``alpha, beta`` come from one least-squares fit of the features on batch indicators and
  covariates (with ``ref_batch``, the reference batch's column is the intercept, so ``alpha`` is
  the reference batch's own intercept; without it, ``alpha`` is the size-weighted mean of the
  batch intercepts);
* the pooled variance ``sigma_g^2`` is the mean squared residual over the reference batch's rows
  (``ref_batch``) or over all rows: ``SSR / (n - ddof)`` with ``ddof=0`` -- sva's (and
  neuroCombat's) convention. ``ddof=1`` gives the sample-variance convention of the earlier
  ``vcfnb.studies.osteoporosis.harmonise``;
* data are standardised, ``z = (x - alpha - c' beta) / sigma``; each batch's ``gamma_hat``
  (mean of ``z``) and ``delta_hat^2`` (variance of ``z``, ddof 1) are shrunk across features to
  ``gamma*``, ``delta*^2`` with ComBat's priors -- parametric (normal / inverse-gamma, iterated
  to sva's convergence rule) or non-parametric (sva's leave-one-feature-out Monte-Carlo
  integration) -- and ``x* = sigma (z - gamma*) / delta* + alpha + c' beta``;
* with ``ref_batch`` the reference batch's rows are returned unchanged.

Fit on training rows, transform anything
----------------------------------------
``fit`` estimates everything above from the rows it is given (the training patients, which
must include the reference batch). ``transform`` never refits: rows of a batch seen in ``fit``
are adjusted with that batch's stored ``gamma*``, ``delta*``. ComBat is **transductive for a new
batch**: a batch absent from ``fit`` (an external centre) has no stored parameters, so
``transform`` estimates its location and scale from that batch's own rows (no labels are
used) against the fitted reference -- it therefore needs the whole new batch at once, and the
result for one external patient depends on the other external patients. Pass
``new_batches="error"`` to forbid this. Without covariates, ``fit(train).transform(external)``
equals ``sva::ComBat`` on the training and external rows together with ``ref.batch`` (the
reference and each batch are adjusted independently); with covariates, ``beta`` comes from the
training rows only (sva would re-estimate it with the new batch included).

Features that are constant within a fitted batch are not adjusted (sva's rule); features that
are constant within a new batch are left unchanged in that batch. Missing values are not
supported (impute first).

References
----------
Johnson WE, Li C, Rabinovic A. Adjusting batch effects in microarray expression data using
empirical Bayes methods. Biostatistics 2007;8:118-127.
Stein CK et al. Removing batch effects from purified plasma cell gene expression microarrays
with modified ComBat. BMC Bioinformatics 2015;16:63 (reference batch).
Fortin J-P et al. Harmonization of cortical thickness measurements across scanners and sites.
NeuroImage 2018;167:104-120 (ComBat for imaging features).
Leek JT et al. sva: Surrogate Variable Analysis. R package, Bioconductor.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["ComBat"]


def _postmean(g_hat: np.ndarray, g_bar: float, n: float, d_star: Any, t2: float) -> np.ndarray:
    return (t2 * n * g_hat + d_star * g_bar) / (t2 * n + d_star)


def _it_sol(z: np.ndarray, g_hat: np.ndarray, d_hat: np.ndarray, g_bar: float, t2: float,
            a: float, b: float, conv: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, int]:
    """sva's ``it.sol``: alternate the posterior mean and variance until the relative change is
    at most ``conv``. The change is sva's ``max(|g_new - g_old| / g_old, |d_new - d_old| /
    d_old)`` -- signed denominators, as in sva, so that the iteration stops where sva stops."""
    n = z.shape[0]
    g_old, d_old = g_hat, d_hat
    g_new, d_new = g_hat, d_hat
    for it in range(1, max_iter + 1):
        g_new = _postmean(g_hat, g_bar, n, d_old, t2)
        sum2 = ((z - g_new) ** 2).sum(axis=0)
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            change = np.nanmax(np.concatenate([np.abs(g_new - g_old) / g_old,
                                               np.abs(d_new - d_old) / d_old]))
        g_old, d_old = g_new, d_new
        if not change > conv:
            return g_new, d_new, it
    warnings.warn(f"ComBat: parametric EB did not converge in {max_iter} iterations",
                  RuntimeWarning, stacklevel=3)
    return g_new, d_new, max_iter


def _int_eprior(z: np.ndarray, g_hat: np.ndarray, d_hat: np.ndarray, chunk: int = 512
                ) -> tuple[np.ndarray, np.ndarray]:
    """sva's ``int.eprior`` (non-parametric priors): for each feature, the average of the
    other features' ``gamma_hat``/``delta_hat`` weighted by the normal likelihood of this
    feature's standardised values under them. Computed in log space (sva's direct product
    underflows to 0/0 for large batches; the weights are the same where it does not)."""
    n, p = z.shape
    xbar = z.mean(axis=0)
    ss = ((z - xbar) ** 2).sum(axis=0)
    logc = -0.5 * n * np.log(2.0 * np.pi * d_hat)
    g_star, d_star = np.empty(p), np.empty(p)
    for lo in range(0, p, chunk):
        idx = np.arange(lo, min(lo + chunk, p))
        # sum_r (x_r - g_j)^2 = SS + n (xbar - g_j)^2, per (feature i, other feature j)
        sum2 = ss[idx, None] + n * (xbar[idx, None] - g_hat[None, :]) ** 2
        ll = logc[None, :] - sum2 / (2.0 * d_hat[None, :])
        ll[np.arange(idx.size), idx] = -np.inf  # leave the feature itself out
        ll -= ll.max(axis=1, keepdims=True)
        w = np.exp(ll)
        total = w.sum(axis=1)
        g_star[idx] = (w @ g_hat) / total
        d_star[idx] = (w @ d_hat) / total
    return g_star, d_star


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat harmonisation (sva conventions), fitted on training rows only.

    Input and output are DataFrames: ``X`` holds the batch column, the covariate columns and
    the features (every other column, all numeric and finite). ``transform`` returns the
    harmonised features only (same index, columns in input order). See the module docstring
    for the model and for what happens to a batch that ``fit`` has not seen.

    Parameters
    ----------
    batch_col : str
        Column of ``X`` naming each row's batch (centre, scanner). Labels are compared as
        strings.
    ref_batch : str, optional
        Reference batch (sva's ``ref.batch``): left unchanged, everything else is mapped onto
        it; must be among the rows given to ``fit``. None: all batches are mapped onto the
        size-weighted pooled distribution of the fitted batches.
    covariates : sequence of str, optional
        Columns whose effects are preserved (sva's ``mod``; e.g. age, sex -- never the outcome
        of a model evaluated on these features). Numeric columns enter as they are; other
        columns are coded as indicators of their fitted levels (first level dropped).
    parametric : bool
        Parametric priors (sva ``par.prior=TRUE``) or non-parametric (``FALSE``).
    mean_only : bool
        Adjust the location only (sva ``mean.only``). Forced when a fitted batch has one row
        (sva's rule; a warning says so).
    empirical_bayes : bool
        False: no shrinkage, each batch's own ``gamma_hat``/``delta_hat`` are used (plain
        location/scale adjustment).
    ddof : int
        Delta degrees of freedom of the pooled variance, ``SSR / (n - ddof)``: 0 = sva and
        neuroCombat (default), 1 = sample variance.
    new_batches : {"estimate", "error"}
        What ``transform`` does with a batch absent from ``fit``: estimate its location/scale
        from its own rows (transductive, needs the whole batch) or raise.
    conv, max_iter : float, int
        Convergence of the parametric iteration (sva: ``conv = 1e-4``, no iteration limit).

    Attributes
    ----------
    features_ : list of str
        Feature columns (input order). ``adjusted_`` : ndarray of bool, features that are
        adjusted (not constant within a fitted batch).
    batches_ : list of str
        Fitted batch labels (sorted); ``n_rows_`` : dict batch → rows.
    grand_mean_, var_pooled_ : Series
        ``alpha`` and ``sigma^2`` per adjusted feature.
    beta_ : DataFrame
        Covariate coefficients (rows: coded covariate columns; columns: adjusted features).
    gamma_star_, delta_star_ : DataFrame
        Shrunk location and variance per fitted batch (rows) and adjusted feature (columns);
        ``delta_star_`` is the variance (sva's ``delta.star``). ``gamma_hat_``, ``delta_hat_``
        before shrinkage. The reference batch has ``gamma* = 0``, ``delta* = 1``.
    mean_only_ : bool
        Whether the mean-only model was used.

    Examples
    --------
    Site B exists only outside the training rows (an external centre); the reference is the
    training centre A:

    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(60, 4)), columns=list("abcd"))
    >>> X.loc[40:, list("abcd")] = X.loc[40:, list("abcd")] * 3 + 5
    >>> X["site"] = ["A"] * 40 + ["B"] * 20
    >>> cb = ComBat(batch_col="site", ref_batch="A").fit(X.iloc[:30])  # training rows only
    >>> H = cb.transform(X)  # site B: location/scale estimated from its own 20 rows
    >>> bool(H.iloc[:40].equals(X.iloc[:40, :4]))  # the reference centre is unchanged
    True
    >>> bool(abs(H.loc[40:, "a"].mean() - X.loc[:29, "a"].mean()) < 0.5)
    True
    """

    def __init__(self, batch_col: str = "batch", ref_batch: Any = None,
                 covariates: Sequence[str] | None = None, parametric: bool = True,
                 mean_only: bool = False, empirical_bayes: bool = True, ddof: int = 0,
                 new_batches: str = "estimate", conv: float = 1e-4, max_iter: int = 10000):
        self.batch_col = batch_col
        self.ref_batch = ref_batch
        self.covariates = covariates
        self.parametric = parametric
        self.mean_only = mean_only
        self.empirical_bayes = empirical_bayes
        self.ddof = ddof
        self.new_batches = new_batches
        self.conv = conv
        self.max_iter = max_iter

    # -- input ----------------------------------------------------------------------------
    def _covariate_names(self) -> list[str]:
        if self.covariates is None:
            return []
        if isinstance(self.covariates, str):
            return [self.covariates]
        return list(self.covariates)

    def _check(self, X: Any, fitting: bool) -> tuple[pd.DataFrame, pd.Series, list[str]]:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ComBat needs a DataFrame with the batch column "
                            f"{self.batch_col!r} (got {type(X).__name__})")
        covs = self._covariate_names()
        missing = [c for c in [self.batch_col, *covs] if c not in X.columns]
        if missing:
            raise ValueError(f"columns {missing} are not in X")
        if fitting:
            feats = [c for c in X.columns if c != self.batch_col and c not in covs]
            bad = [c for c in feats if not pd.api.types.is_numeric_dtype(X[c])]
            if bad:
                raise ValueError(f"non-numeric feature columns {bad[:5]}: pass only the batch "
                                 "column, covariates and numeric features")
            if not feats:
                raise ValueError("no feature columns")
        else:
            feats = list(self.features_)
            absent = [c for c in feats if c not in X.columns]
            if absent:
                raise ValueError(f"fitted features missing from X: {absent[:5]}")
        if X[self.batch_col].isna().any():
            raise ValueError(f"missing batch labels in {self.batch_col!r}")
        batch = X[self.batch_col].astype(str)
        return X, batch, feats

    def _covariate_matrix(self, X: pd.DataFrame, fitting: bool) -> np.ndarray:
        covs = self._covariate_names()
        if fitting:
            self.covariate_levels_ = {}
            for c in covs:
                if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]):
                    self.covariate_levels_[c] = sorted(X[c].astype(str).unique())
        cols, names = [], []
        for c in covs:
            if c in self.covariate_levels_:
                levels = self.covariate_levels_[c]
                v = X[c].astype(str)
                unseen = sorted(set(v) - set(levels))
                if unseen:
                    raise ValueError(f"covariate {c!r} has levels {unseen} not seen in fit")
                for lev in levels[1:]:
                    cols.append((v == lev).to_numpy(float))
                    names.append(f"{c}[{lev}]")
            else:
                v = X[c].to_numpy(float)
                if not np.isfinite(v).all():
                    raise ValueError(f"covariate {c!r} has missing or infinite values")
                cols.append(v)
                names.append(c)
        if fitting:
            self.covariate_columns_ = names
        return np.column_stack(cols) if cols else np.zeros((len(X), 0))

    # -- one batch ------------------------------------------------------------------------
    def _batch_params(self, z: np.ndarray, mean_only: bool) -> dict[str, np.ndarray]:
        """``gamma_hat, delta_hat, gamma_star, delta_star`` of one batch's standardised rows."""
        n, p = z.shape
        g_hat = z.mean(axis=0)
        d_hat = np.ones(p) if mean_only else z.var(axis=0, ddof=1)
        out = {"gamma_hat": g_hat, "delta_hat": d_hat, "n_iter": 0}
        if not self.empirical_bayes:
            return {**out, "gamma_star": g_hat, "delta_star": d_hat}
        if p < 2:
            raise ValueError("empirical Bayes needs at least two adjusted features "
                             "(or empirical_bayes=False)")
        if not self.parametric:
            g_star, d_star = _int_eprior(z, g_hat, d_hat)
            return {**out, "gamma_star": g_star, "delta_star": np.ones(p) if mean_only
                    else d_star}
        g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
        if mean_only:
            return {**out, "gamma_star": _postmean(g_hat, g_bar, 1.0, 1.0, t2),
                    "delta_star": np.ones(p)}
        m, s2 = d_hat.mean(), d_hat.var(ddof=1)
        a, b = (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2
        g_star, d_star, it = _it_sol(z, g_hat, d_hat, g_bar, t2, a, b, self.conv,
                                     self.max_iter)
        return {**out, "gamma_star": g_star, "delta_star": d_star, "n_iter": it}

    # -- fit / transform ------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> ComBat:
        """Estimate the standardisation and each fitted batch's parameters from ``X``'s rows.

        ``y`` is ignored (ComBat is label-free); it exists for pipelines.
        """
        if self.new_batches not in ("estimate", "error"):
            raise ValueError(f"new_batches must be 'estimate' or 'error', got {self.new_batches!r}")
        X, batch, feats = self._check(X, fitting=True)
        Y = X[feats].to_numpy(float)
        if not np.isfinite(Y).all():
            raise ValueError("features contain missing or infinite values: ComBat needs "
                             "complete data (impute first)")
        C = self._covariate_matrix(X, fitting=True)
        levels = sorted(batch.unique())
        ref = None if self.ref_batch is None else str(self.ref_batch)
        if ref is not None and ref not in levels:
            raise ValueError(f"reference batch {ref!r} is not among the fitted batches {levels}")
        rows = {b: (batch == b).to_numpy() for b in levels}
        counts = {b: int(r.sum()) for b, r in rows.items()}
        if ref is not None and counts[ref] < 2:
            raise ValueError(f"reference batch {ref!r} has {counts[ref]} row(s): too few")
        # sva: features constant within a batch (of > 1 rows) are not adjusted
        constant = np.zeros(len(feats), bool)
        for b, r in rows.items():
            if counts[b] > 1:
                constant |= np.ptp(Y[r], axis=0) == 0
        self.features_ = list(feats)
        self.adjusted_ = ~constant
        mean_only = bool(self.mean_only)
        if min(counts.values()) == 1 and not mean_only:
            warnings.warn("ComBat: a batch has one row; using the mean-only model (sva's rule)",
                          RuntimeWarning, stacklevel=2)
            mean_only = True
        self.mean_only_ = mean_only
        Ya = Y[:, self.adjusted_]
        # design: batch indicators (the reference column = intercept) + covariates
        B = np.column_stack([rows[b].astype(float) for b in levels])
        if ref is not None:
            B[:, levels.index(ref)] = 1.0
        keep = ~np.all(C == 1.0, axis=0) if C.shape[1] else np.zeros(0, bool)
        C = C[:, keep]
        self.covariate_columns_ = [c for c, k in zip(self.covariate_columns_, keep) if k]
        self.covariate_keep_ = keep
        D = np.column_stack([B, C])
        if np.linalg.matrix_rank(D) < D.shape[1]:
            raise ValueError("the covariates are confounded with batch or with each other")
        coef = np.linalg.solve(D.T @ D, D.T @ Ya)
        nb = len(levels)
        if ref is not None:
            grand = coef[levels.index(ref)]
            pool = rows[ref]
        else:
            grand = np.array([counts[b] for b in levels], float) / len(X) @ coef[:nb]
            pool = np.ones(len(X), bool)
        resid = Ya - D @ coef
        dof = int(pool.sum()) - self.ddof
        if dof <= 0:
            raise ValueError(f"ddof={self.ddof} leaves no degrees of freedom")
        var_pooled = (resid[pool] ** 2).sum(axis=0) / dof
        cols = [f for f, a in zip(feats, self.adjusted_) if a]
        self.grand_mean_ = pd.Series(grand, index=cols, name="grand_mean")
        self.var_pooled_ = pd.Series(var_pooled, index=cols, name="var_pooled")
        self.beta_ = pd.DataFrame(coef[nb:], index=self.covariate_columns_, columns=cols)
        self.batches_ = levels
        self.n_rows_ = counts
        z = self._standardise(Ya, C)
        params = {}
        for b in levels:
            pb = self._batch_params(z[rows[b]], mean_only)
            if b == ref:
                pb = {**pb, "gamma_star": np.zeros(len(cols)), "delta_star": np.ones(len(cols))}
            params[b] = pb
        self.n_iter_ = {b: int(params[b]["n_iter"]) for b in levels}
        for key in ("gamma_hat", "delta_hat", "gamma_star", "delta_star"):
            setattr(self, f"{key}_", pd.DataFrame([params[b][key] for b in levels],
                                                  index=pd.Index(levels, name="batch"),
                                                  columns=cols))
        return self

    def _standardise(self, Ya: np.ndarray, C: np.ndarray) -> np.ndarray:
        return (Ya - self._stand_mean(C)) / np.sqrt(self.var_pooled_.to_numpy())

    def _stand_mean(self, C: np.ndarray) -> np.ndarray:
        return self.grand_mean_.to_numpy() + C @ self.beta_.to_numpy()

    def _prepare(self, X: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]:
        check_is_fitted(self, "gamma_star_")
        X, batch, feats = self._check(X, fitting=False)
        Y = X[feats].to_numpy(float)
        if not np.isfinite(Y[:, self.adjusted_]).all():
            raise ValueError("features contain missing or infinite values")
        C = self._covariate_matrix(X, fitting=False)[:, self.covariate_keep_]
        return X, batch, Y, C

    def _new_batch(self, b: str, z: np.ndarray) -> tuple[dict, np.ndarray]:
        """Parameters of a batch absent from ``fit``, from its own standardised rows ``z``;
        and the mask of features it can adjust (not constant within the batch)."""
        if self.new_batches == "error":
            raise ValueError(f"batch {b!r} was not seen in fit (new_batches='error')")
        mean_only = self.mean_only_
        if z.shape[0] == 1:
            warnings.warn(f"ComBat: new batch {b!r} has one row; mean-only adjustment",
                          RuntimeWarning, stacklevel=3)
            mean_only = True
        ok = np.ptp(z, axis=0) > 0 if z.shape[0] > 1 else np.ones(z.shape[1], bool)
        return self._batch_params(z[:, ok], mean_only), ok

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonised features of ``X`` (fitted batches: stored parameters; a new batch: its
        parameters estimated from its own rows in ``X`` -- see the module docstring)."""
        X, batch, Y, C = self._prepare(X)
        adj = self.adjusted_
        z = self._standardise(Y[:, adj], C)
        stand = self._stand_mean(C)
        sd = np.sqrt(self.var_pooled_.to_numpy())
        out = Y.copy()
        ref = None if self.ref_batch is None else str(self.ref_batch)
        for b in pd.unique(batch):
            if b == ref:
                continue  # the reference batch is returned unchanged
            r = (batch == b).to_numpy()
            ok = np.ones(int(adj.sum()), bool)
            if b in self.batches_:
                g, d = self.gamma_star_.loc[b].to_numpy(), self.delta_star_.loc[b].to_numpy()
            else:
                pb, ok = self._new_batch(b, z[r])
                g, d = pb["gamma_star"], pb["delta_star"]
            new = (z[r][:, ok] - g) / np.sqrt(d) * sd[ok] + stand[r][:, ok]
            out[np.ix_(np.flatnonzero(r), np.flatnonzero(adj)[ok])] = new
        return pd.DataFrame(out, index=X.index, columns=self.features_)

    def batch_effects(self, X: pd.DataFrame | None = None) -> pd.DataFrame:
        """Long table ``batch, feature, n, fitted, gamma_hat, delta_hat, gamma_star,
        delta_star`` of the fitted batches, plus the new batches of ``X`` (estimated as
        ``transform`` would; ``fitted`` False) -- for reporting how far each centre was moved."""
        check_is_fitted(self, "gamma_star_")
        frames = []
        for b in self.batches_:
            frames.append(pd.DataFrame({
                "batch": b, "feature": self.gamma_star_.columns, "n": self.n_rows_[b],
                "fitted": True, **{k: getattr(self, f"{k}_").loc[b].to_numpy()
                                   for k in ("gamma_hat", "delta_hat", "gamma_star",
                                             "delta_star")}}))
        if X is not None:
            X, batch, Y, C = self._prepare(X)
            z = self._standardise(Y[:, self.adjusted_], C)
            for b in pd.unique(batch):
                if b in self.batches_:
                    continue
                r = (batch == b).to_numpy()
                pb, ok = self._new_batch(b, z[r])
                frames.append(pd.DataFrame({
                    "batch": b, "feature": self.gamma_star_.columns[ok], "n": int(r.sum()),
                    "fitted": False, **{k: pb[k] for k in ("gamma_hat", "delta_hat",
                                                           "gamma_star", "delta_star")}}))
        return pd.concat(frames, ignore_index=True)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "features_")
        return np.asarray(self.features_, dtype=object)
