"""Inter-reader reliability of radiomics features: per-feature intraclass correlation.

Studies keep only features whose ICC between two readers' segmentations exceeds a threshold
(seed 000: ICC > 0.75; seed 001: >= 0.85; seed 002: > 0.75). With ~2000 features x 100 cases,
calling :func:`pingouin.intraclass_corr` per feature takes minutes, so :func:`feature_icc`
computes the same two-way ANOVA mean squares for all features at once with numpy and applies
the ICC and confidence-interval formulas of Shrout & Fleiss (1979) and McGraw & Wong (1996)
exactly as pingouin (and R ``psych::ICC``) do; the tests check equality with both.

ICC forms (pingouin / psych names; McGraw & Wong in brackets):

- ``ICC1``  one-way random, single rater [ICC(1)]
- ``ICC2``  two-way random, absolute agreement, single rater [ICC(A,1)] - vcfnb's default
- ``ICC3``  two-way mixed, consistency, single rater [ICC(C,1)]
- ``ICC1k``, ``ICC2k``, ``ICC3k``  the same for the mean of the k raters.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["ICC_TYPES", "feature_icc", "icc_from_array", "select_reliable", "reader_icc"]

ICC_TYPES = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
_ALIASES = {
    "ICC(1,1)": "ICC1", "ICC(2,1)": "ICC2", "ICC(3,1)": "ICC3", "ICC(1,K)": "ICC1k",
    "ICC(2,K)": "ICC2k", "ICC(3,K)": "ICC3k", "ICC(A,1)": "ICC2", "ICC(C,1)": "ICC3",
    "ICC(A,K)": "ICC2k", "ICC(C,K)": "ICC3k",
}
_COLUMNS = ["feature", "icc", "ci_low", "ci_high", "n"]


def _icc_name(icc: str) -> str:
    key = str(icc).replace(" ", "")
    for name in ICC_TYPES:
        if key.lower() == name.lower():
            return name
    if key.upper() in _ALIASES:
        return _ALIASES[key.upper()]
    raise ValueError(f"unknown ICC form {icc!r}; use one of {', '.join(ICC_TYPES)}")


def icc_from_array(x: np.ndarray, icc: str = "ICC2", *, ci: float = 0.95) -> pd.DataFrame:
    """ICC and its F-based confidence interval for many variables at once.

    Parameters
    ----------
    x : ndarray, shape (n_targets, n_raters, n_variables)
        Ratings without missing values (targets = cases, raters = readers, variables =
        features). A 2-D array is one variable.
    icc : str
        ICC form, one of :data:`ICC_TYPES` (aliases such as ``"ICC(2,1)"`` or ``"ICC(A,1)"`` work).
    ci : float
        Confidence level of the interval (pingouin and psych use 0.95).

    Returns
    -------
    DataFrame
        One row per variable with columns ``icc, ci_low, ci_high``. A variable that is constant
        over all targets and raters has no defined ICC: NaN in every column.

    Notes
    -----
    Mean squares of the two-way ANOVA without interaction: ``MSR`` (targets), ``MSC``
    (raters), ``MSE`` (residual) and ``MSW`` (within targets = pooled raters + residual).
    ICC2 = (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n); the interval of ICC2/ICC2k
    uses Satterthwaite's approximate degrees of freedom (McGraw & Wong 1996, table 7), as in
    ``psych::ICC`` and pingouin.

    Examples
    --------
    >>> x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6],
    ...               [10, 5, 6, 9], [6, 2, 4, 7]], float)  # Shrout & Fleiss (1979) table 2
    >>> icc_from_array(x, "ICC2").round(2).iloc[0].tolist()
    [0.29, 0.02, 0.76]
    """
    name = _icc_name(icc)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"x must have shape (targets, raters[, variables]), got {x.shape}")
    n, k, _ = x.shape
    if n < 2 or k < 2:
        raise ValueError(f"need at least 2 targets and 2 raters, got {n} and {k}")
    if np.isnan(x).any():
        raise ValueError("x contains NaN; drop incomplete targets first (feature_icc does)")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")

    grand = x.mean(axis=(0, 1))
    row = x.mean(axis=1)  # (n, v)
    col = x.mean(axis=0)  # (k, v)
    ss_total = ((x - grand) ** 2).sum(axis=(0, 1))
    ss_r = k * ((row - grand) ** 2).sum(axis=0)
    ss_c = n * ((col - grand) ** 2).sum(axis=0)
    ss_e = ss_total - ss_r - ss_c
    msr = ss_r / (n - 1)
    msc = ss_c / (k - 1)
    mse = np.maximum(ss_e, 0.0) / ((n - 1) * (k - 1))
    msw = (ss_c + np.maximum(ss_e, 0.0)) / (n * (k - 1))

    scale = np.maximum(np.abs(x).max(axis=(0, 1)), np.finfo(float).tiny)
    constant = np.ptp(x, axis=(0, 1)) <= 1e-12 * scale
    alpha = 1.0 - ci
    df1, df_w, df_e = n - 1, n * (k - 1), (n - 1) * (k - 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if name in ("ICC1", "ICC1k"):
            value = ((msr - msw) / (msr + (k - 1) * msw) if name == "ICC1"
                     else (msr - msw) / msr)
            f_obs = msr / msw
            fl = f_obs / stats.f.ppf(1 - alpha / 2, df1, df_w)
            fu = f_obs * stats.f.ppf(1 - alpha / 2, df_w, df1)
            if name == "ICC1":
                lo, hi = (fl - 1) / (fl + (k - 1)), (fu - 1) / (fu + (k - 1))
            else:
                lo, hi = 1 - 1 / fl, 1 - 1 / fu
        elif name in ("ICC3", "ICC3k"):
            value = ((msr - mse) / (msr + (k - 1) * mse) if name == "ICC3"
                     else (msr - mse) / msr)
            f_obs = msr / mse
            fl = f_obs / stats.f.ppf(1 - alpha / 2, df1, df_e)
            fu = f_obs * stats.f.ppf(1 - alpha / 2, df_e, df1)
            if name == "ICC3":
                lo, hi = (fl - 1) / (fl + (k - 1)), (fu - 1) / (fu + (k - 1))
            else:
                lo, hi = 1 - 1 / fl, 1 - 1 / fu
        else:
            icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
            fj = msc / mse
            vn = df_e * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
            vd = df1 * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
            v = vn / vd
            f2u = stats.f.ppf(1 - alpha / 2, df1, v)
            f2l = stats.f.ppf(1 - alpha / 2, v, df1)
            lo = n * (msr - f2u * mse) / (f2u * (k * msc + (k * n - k - n) * mse) + n * msr)
            hi = n * (f2l * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f2l * msr)
            if name == "ICC2":
                value = icc2
            else:
                value = (msr - mse) / (msr + (msc - mse) / n)
                lo, hi = lo * k / (1 + lo * (k - 1)), hi * k / (1 + hi * (k - 1))
    out = pd.DataFrame({"icc": value, "ci_low": lo, "ci_high": hi}).astype(float)
    out.loc[constant | ~np.isfinite(out["icc"].to_numpy()), :] = np.nan
    return out


def _numeric(df: pd.DataFrame) -> np.ndarray:
    """Float array of a table; non-numeric cells become NaN."""
    bad = [c for c, t in df.dtypes.items() if not pd.api.types.is_numeric_dtype(t)
           or pd.api.types.is_bool_dtype(t)]
    if bad:
        df = df.copy()
        df[bad] = df[bad].apply(pd.to_numeric, errors="coerce")
    return df.to_numpy(dtype=np.float64)


def feature_icc(reader_a: pd.DataFrame, reader_b: pd.DataFrame, *more_readers: pd.DataFrame,
                icc: str = "ICC2", ci: float = 0.95, min_cases: int = 3) -> pd.DataFrame:
    """Per-feature ICC between readers' feature tables.

    Parameters
    ----------
    reader_a, reader_b, *more_readers : DataFrame
        Feature tables, one per reader: rows = cases (the index, e.g. patient or ROI ids),
        columns = features (numeric). Rows are matched by index and columns by name; only cases
        and features present in every table are used.
    icc : str
        ICC form (default ``"ICC2"``: two-way random effects, absolute agreement, single rater,
        the form STUDIES.md prescribes). See :data:`ICC_TYPES`.
    ci : float
        Confidence level of the F-based interval.
    min_cases : int
        Features with fewer complete cases get NaN.

    Returns
    -------
    DataFrame
        Columns ``feature, icc, ci_low, ci_high, n`` (``n`` = cases used), one row per feature
        in the order of ``reader_a``'s columns. Constant or undefined features (e.g. a shape
        feature identical for both readers in every case, or too few cases) have NaN ICC;
        :func:`select_reliable` drops them. Cases with a missing value in any reader are left
        out for that feature only (like pingouin's ``nan_policy="omit"``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = pd.DataFrame(rng.normal(size=(30, 2)), columns=["f1", "f2"])
    >>> a = truth + rng.normal(scale=0.1, size=truth.shape)
    >>> b = truth + rng.normal(scale=0.1, size=truth.shape)
    >>> a["const"] = b["const"] = 1.0
    >>> t = feature_icc(a, b)
    >>> t["feature"].tolist(), bool(t["icc"].iloc[0] > 0.95), bool(np.isnan(t["icc"].iloc[2]))
    (['f1', 'f2', 'const'], True, True)
    """
    readers = [reader_a, reader_b, *more_readers]
    for i, r in enumerate(readers):
        if not isinstance(r, pd.DataFrame):
            raise TypeError(f"reader {i} must be a DataFrame (cases x features), "
                            f"got {type(r).__name__}")
        if r.index.has_duplicates:
            dup = r.index[r.index.duplicated()].unique().tolist()[:5]
            raise ValueError(f"reader {i} has duplicate case ids: {dup}")
    cases = readers[0].index
    for r in readers[1:]:
        cases = cases.intersection(r.index, sort=False)
    features = [c for c in readers[0].columns if all(c in r.columns for r in readers[1:])]
    if len(cases) == 0:
        raise ValueError("the readers' tables share no case id (index)")
    if not features:
        raise ValueError("the readers' tables share no feature column")
    name = _icc_name(icc)
    x = np.stack([_numeric(r.loc[cases, features]) for r in readers], axis=1)  # (n, k, v)
    x[~np.isfinite(x)] = np.nan
    complete = ~np.isnan(x).any(axis=1)  # (n, v)
    n_used = complete.sum(axis=0)
    res = pd.DataFrame(np.nan, index=range(len(features)), columns=["icc", "ci_low", "ci_high"])
    full = complete.all(axis=0) & (n_used >= max(min_cases, 2))
    if full.any():
        res.loc[np.flatnonzero(full), :] = icc_from_array(x[:, :, full], name, ci=ci).to_numpy()
    # features with missing values: group by their pattern of complete cases
    partial = np.flatnonzero(~complete.all(axis=0) & (n_used >= max(min_cases, 2)))
    if partial.size:
        patterns: dict[bytes, list[int]] = {}
        for j in partial:
            patterns.setdefault(complete[:, j].tobytes(), []).append(int(j))
        for cols in patterns.values():
            rows = complete[:, cols[0]]
            res.loc[cols, :] = icc_from_array(x[rows][:, :, cols], name, ci=ci).to_numpy()
    out = pd.DataFrame({"feature": features, **{c: res[c].to_numpy() for c in res.columns},
                        "n": n_used.astype(int)})
    return out[_COLUMNS]


def select_reliable(icc_table: pd.DataFrame, threshold: float = 0.75, *, on: str = "icc",
                    inclusive: bool = False, keep_undefined: bool = False) -> list[str]:
    """Names of the features whose ICC passes the threshold.

    Parameters
    ----------
    icc_table : DataFrame
        Output of :func:`feature_icc`.
    threshold : float
        Seed 000: 0.75 (``ICC > 0.75``); seed 001: 0.85 (``ICC >= 0.85``, ``inclusive=True``).
    on : {"icc", "ci_low"}
        Compare the point estimate (papers) or the lower confidence bound (stricter).
    inclusive : bool
        ``>=`` instead of ``>``.
    keep_undefined : bool
        Keep features whose ICC is NaN (constant or undefined). Default False: a feature whose
        reliability cannot be shown is never kept.

    Returns
    -------
    list of str
        Feature names in table order.

    Examples
    --------
    >>> t = pd.DataFrame({"feature": ["a", "b", "c"], "icc": [0.9, 0.75, np.nan],
    ...                   "ci_low": [0.8, 0.6, np.nan], "ci_high": [0.95, 0.85, np.nan]})
    >>> select_reliable(t, 0.75), select_reliable(t, 0.75, inclusive=True)
    (['a'], ['a', 'b'])
    """
    if on not in ("icc", "ci_low"):
        raise ValueError(f"on must be 'icc' or 'ci_low', got {on!r}")
    missing = {"feature", on} - set(icc_table.columns)
    if missing:
        raise ValueError(f"icc_table lacks column(s) {sorted(missing)}")
    vals = icc_table[on].to_numpy(dtype=float)
    keep = vals >= threshold if inclusive else vals > threshold
    if keep_undefined:
        keep |= np.isnan(vals)
    return icc_table.loc[keep, "feature"].astype(str).tolist()


def reader_icc(features: pd.DataFrame, *, readers: tuple = ("1", "2"), by: str | None = "sequence",
               case: tuple = ("patient_id", "roi"), icc: str = "ICC2", threshold: float = 0.75,
               inclusive: bool = False) -> pd.DataFrame:
    """Per-feature ICC between two readers' ROIs of a long feature table, per ``by`` group.

    Cases of the ICC are the ``case`` keys (e.g. patient × vertebra) outlined by both readers;
    a ``by`` group (e.g. a sequence) without the second reader is left out.

    Returns
    -------
    DataFrame
        ``<by>, feature, icc, ci_low, ci_high, n, kept`` (``kept`` = ICC above ``threshold``;
        an undefined ICC is never kept, :func:`select_reliable`).

    Examples
    --------
    >>> g = np.random.default_rng(0); truth = g.normal(size=20)
    >>> long = pd.DataFrame({"patient_id": np.tile(np.arange(20), 2), "roi": "L1",
    ...     "sequence": "T1", "reader": np.repeat(["1", "2"], 20),
    ...     "f": np.r_[truth, truth + g.normal(scale=0.1, size=20)]})
    >>> reader_icc(long)[["sequence", "feature", "kept"]].values.tolist()
    [['T1', 'f', True]]
    """
    from vcfnb.features import META_COLUMNS

    cols = [c for c in features.columns if c not in META_COLUMNS and c not in case
            and pd.api.types.is_numeric_dtype(features[c])]
    f = features.assign(reader=features["reader"].astype(str))
    groups = [(None, f)] if by is None else list(f.groupby(by, sort=True))
    tables = []
    for key, g in groups:
        a = g[g.reader == str(readers[0])].set_index(list(case))[cols]
        b = g[g.reader == str(readers[1])].set_index(list(case))[cols]
        both = a.index.intersection(b.index)
        if b.empty or not len(both):
            continue
        t = feature_icc(a.loc[both], b.loc[both], icc=icc)
        if by is not None:
            t.insert(0, by, key)
        tables.append(t)
    if not tables:
        raise ValueError(f"no ROI outlined by both readers {readers}: the ICC needs them")
    out = pd.concat(tables, ignore_index=True)
    kept = set(select_reliable(out.assign(feature=out.index.astype(str)), threshold,
                               inclusive=inclusive))
    out["kept"] = out.index.astype(str).isin(kept)
    return out
