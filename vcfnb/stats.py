"""Statistics the papers report, each checked against R.

ROC AUC with DeLong / bootstrap confidence intervals (pROC), DeLong tests for paired and
unpaired ROC curves, Youden cutoffs and binary metrics with counts and CIs, calibration
(binned curve, logistic recalibration slope/intercept, Hosmer–Lemeshow), decision-curve net
benefit, baseline ("table 1") comparisons, univariate/multivariable logistic-regression tables,
propensity-score matching with balance tables, and rms-style nomogram points.

Every function is pure (inputs are never mutated) and returns a :class:`pandas.Series`
(scalar results, attribute access works: ``res.auc``) or a tidy :class:`pandas.DataFrame`
with documented columns. Nothing here imports matplotlib (that is :mod:`vcfnb.plots`).

Reference values in ``tests/test_stats.py`` were computed in R (pROC, rms, MatchIt, stats);
the R calls are in comments there and the scripts in ``tests/r_reference/``.

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach. Biometrics 1988;44:837-845.
Sun X, Xu W. Fast implementation of DeLong's algorithm. IEEE Signal Process Lett 2014;21:1389-93.
Robin X et al. pROC: an open-source package for R and S+ to analyze and compare ROC curves.
BMC Bioinformatics 2011;12:77.
Hosmer DW, Lemeshow S. Applied Logistic Regression. Wiley, 2000.
Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-5.
Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
Med Decis Making 2006;26:565-574.
Ho DE, Imai K, King G, Stuart EA. MatchIt: nonparametric preprocessing for parametric causal
inference. J Stat Softw 2011;42(8).
Harrell FE. Regression Modeling Strategies (rms::nomogram). Springer, 2015.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from vcfnb.rng import generator

__all__ = [
    "Nomogram",
    "balance_table",
    "baseline_table",
    "binary_metrics",
    "calibration_curve",
    "calibration_slope_intercept",
    "calibration",
    "calibration_by_class",
    "class_shift_sentence",
    "class_shift_text",
    "cv_corrected_ci",
    "cv_delong_pairs",
    "decision_curve",
    "delong_pairs",
    "evaluate",
    "delong_matrix",
    "delong_test",
    "delong_test_unpaired",
    "hosmer_lemeshow",
    "logistic_table",
    "model_report",
    "net_benefit",
    "nomogram_points",
    "propensity_match",
    "roc_auc_ci",
    "univariate_multivariate",
    "youden_cutoff",
]

RngLike = int | np.random.Generator | None


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _binary_y(y_true, name: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(int)
    vals = (
        set(np.unique(y[~pd.isna(y)]).tolist()) if y.dtype == object else set(np.unique(y).tolist())
    )
    if not vals <= {0, 1}:
        raise ValueError(
            f"{name} must contain only 0/1 (negative/positive), got values {sorted(vals)[:5]}"
        )
    return y.astype(int)


def _score(score, n: int, name: str = "score") -> np.ndarray:
    s = np.asarray(score, dtype=float)
    if s.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like y_true, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _split(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cases, controls = s[y == 1], s[y == 0]
    if len(cases) < 2 or len(controls) < 2:
        raise ValueError(
            f"need at least 2 positives and 2 negatives, got {len(cases)} and {len(controls)}"
        )
    return cases, controls


def _placements(cases: np.ndarray, controls: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong structural components: V10 (one per case) and V01 (one per control); ties count 1/2."""
    sc = np.sort(controls)
    sx = np.sort(cases)
    v10 = (np.searchsorted(sc, cases, "left") + np.searchsorted(sc, cases, "right")) / (
        2.0 * len(sc)
    )
    # share of cases above each control (+1/2 tie)
    above = len(sx) - np.searchsorted(sx, controls, "right")
    ties = np.searchsorted(sx, controls, "right") - np.searchsorted(sx, controls, "left")
    v01 = (above + 0.5 * ties) / len(sx)
    return float(v10.mean()), v10, v01


def _delong_cov(cases_list: Sequence[np.ndarray], controls_list: Sequence[np.ndarray]):
    """AUCs and DeLong covariance matrix for k scores measured on the same cases/controls."""
    aucs, v10s, v01s = [], [], []
    for c, k in zip(cases_list, controls_list):
        a, v10, v01 = _placements(c, k)
        aucs.append(a)
        v10s.append(v10)
        v01s.append(v01)
    m, n = len(v10s[0]), len(v01s[0])
    s10 = np.atleast_2d(np.cov(np.vstack(v10s)))
    s01 = np.atleast_2d(np.cov(np.vstack(v01s)))
    return np.array(aucs), s10 / m + s01 / n


_rng = generator


def _prop_ci(k: int, n: int, alpha: float, method: str) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return float("nan"), float("nan")
    m = {"wilson": "wilson", "exact": "beta", "clopper-pearson": "beta"}.get(method)
    if m is None:
        raise ValueError(f"ci method must be 'wilson' or 'exact', got {method!r}")
    lo, hi = proportion_confint(k, n, alpha=alpha, method=m)
    return float(lo), float(hi)


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------------------------
def roc_auc_ci(
    y_true,
    score,
    method: str = "delong",
    *,
    n_boot: int = 1000,
    rng: RngLike = None,
    alpha: float = 0.05,
) -> pd.Series:
    """ROC AUC with a (1 - alpha) confidence interval and a p-value against AUC = 0.5.

    Higher scores are taken to indicate the positive class (pROC ``direction = "<"``); ties
    between a positive and a negative count one half.

    Parameters
    ----------
    y_true : array-like of 0/1
        Outcome (1 = positive).
    score : array-like of float
        Predicted score or probability.
    method : {"delong", "bootstrap"}
        ``"delong"``: ``auc ± z * se`` with the DeLong (1988) variance, clipped to [0, 1], exactly
        like ``pROC::ci.auc(method = "delong")``. ``"bootstrap"``: stratified percentile
        bootstrap (positives and negatives resampled separately, like pROC's default
        ``stratified = TRUE``), ``n_boot`` replicates.
    n_boot : int
        Bootstrap replicates (bootstrap only).
    rng : int, Generator or None
        Seed for the bootstrap.
    alpha : float
        1 - confidence level.

    Returns
    -------
    pandas.Series
        ``auc, ci_low, ci_high, se, p_value, n, n_pos, n_neg, method``. ``se`` is the DeLong
        standard error; ``p_value`` is the two-sided z test of AUC = 0.5 with that SE
        (whatever ``method`` is used for the CI).

    Examples
    --------
    >>> r = roc_auc_ci([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    >>> round(r.auc, 4)
    0.8889
    """
    y = _binary_y(y_true)
    s = _score(score, len(y))
    cases, controls = _split(y, s)
    aucs, cov = _delong_cov([cases], [controls])
    auc, var = float(aucs[0]), float(cov[0, 0])
    se = float(np.sqrt(var))
    z = sps.norm.ppf(1 - alpha / 2)
    if method == "delong":
        lo, hi = max(0.0, auc - z * se), min(1.0, auc + z * se)
    elif method == "bootstrap":
        g = _rng(rng)
        boots = np.empty(n_boot)
        for b in range(n_boot):
            bc = cases[g.integers(0, len(cases), len(cases))]
            bk = controls[g.integers(0, len(controls), len(controls))]
            boots[b] = _placements(bc, bk)[0]
        lo, hi = (float(v) for v in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    else:
        raise ValueError(f"method must be 'delong' or 'bootstrap', got {method!r}")
    p = float(2 * sps.norm.sf(abs(auc - 0.5) / se)) if se > 0 else (0.0 if auc != 0.5 else 1.0)
    return pd.Series(
        {
            "auc": auc,
            "ci_low": lo,
            "ci_high": hi,
            "se": se,
            "p_value": p,
            "n": len(y),
            "n_pos": len(cases),
            "n_neg": len(controls),
            "method": method,
        }
    )


def delong_test(y_true, score_a, score_b) -> pd.Series:
    """DeLong test for two correlated ROC curves (both scores measured on the same subjects).

    Equals ``pROC::roc.test(roc(y, a, direction = "<"), roc(y, b, direction = "<"),
    method = "delong", paired = TRUE)``.

    Returns
    -------
    pandas.Series
        ``auc_a, auc_b, z, p_value`` (two-sided), plus ``se_diff`` and ``n``.

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> r = delong_test(y, [.1, .2, .6, .5, .8, .9], [.3, .1, .2, .7, .4, .6])
    >>> float(r.auc_a), float(r.auc_b)
    (0.8888888888888888, 1.0)
    """
    y = _binary_y(y_true)
    a, b = _score(score_a, len(y), "score_a"), _score(score_b, len(y), "score_b")
    ca, ka = _split(y, a)
    cb, kb = _split(y, b)
    aucs, cov = _delong_cov([ca, cb], [ka, kb])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var <= 0:
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    else:
        z = float(diff / np.sqrt(var))
    return pd.Series(
        {
            "auc_a": float(aucs[0]),
            "auc_b": float(aucs[1]),
            "z": z,
            "p_value": float(2 * sps.norm.sf(abs(z))),
            "se_diff": float(np.sqrt(max(var, 0))),
            "n": len(y),
        }
    )


def delong_test_unpaired(y_a, score_a, y_b, score_b) -> pd.Series:
    """DeLong test for two independent ROC curves (different subjects).

    ``z = (auc_a - auc_b) / sqrt(var_a + var_b)`` with DeLong variances, referred (as pROC
    does) to Student's t with Welch–Satterthwaite degrees of freedom
    ``(Va + Vb)² / (Va² / (Na - 1) + Vb² / (Nb - 1))``; equals
    ``pROC::roc.test(roc_a, roc_b, method = "delong", paired = FALSE)``.

    Returns
    -------
    pandas.Series
        ``auc_a, auc_b, z`` (pROC's ``D``), ``p_value`` (two-sided), ``df``, ``se_diff``.

    Examples
    --------
    >>> r = delong_test_unpaired([0, 0, 1, 1, 0], [.1, .3, .7, .6, .2], [0, 1, 0, 1, 1], [.5, .4, .2, .9, .8])
    >>> bool(0 <= r.p_value <= 1)
    True
    """
    ya, yb = _binary_y(y_a, "y_a"), _binary_y(y_b, "y_b")
    a, b = _score(score_a, len(ya), "score_a"), _score(score_b, len(yb), "score_b")
    auc_a, va = _delong_cov(*[[x] for x in _split(ya, a)])
    auc_b, vb = _delong_cov(*[[x] for x in _split(yb, b)])
    sa, sb = float(va[0, 0]), float(vb[0, 0])
    se = float(np.sqrt(sa + sb))
    diff = float(auc_a[0] - auc_b[0])
    z = diff / se if se > 0 else (0.0 if diff == 0 else float(np.sign(diff) * np.inf))
    df = (
        (sa + sb) ** 2 / (sa**2 / (len(ya) - 1) + sb**2 / (len(yb) - 1)) if se > 0 else float("inf")
    )
    return pd.Series(
        {
            "auc_a": float(auc_a[0]),
            "auc_b": float(auc_b[0]),
            "z": float(z),
            "p_value": float(2 * sps.t.sf(abs(z), df)),
            "df": float(df),
            "se_diff": se,
        }
    )


def delong_matrix(y_true, scores: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Pairwise paired-DeLong p-values between several models scored on the same subjects.

    Returns
    -------
    pandas.DataFrame
        Square, index and columns = model names (in the order of ``scores``), p-values off the
        diagonal, NaN on it. Symmetric. Feed it to :func:`vcfnb.plots.plot_delong_matrix`.

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> m = delong_matrix(y, {"a": [.1, .2, .6, .5, .8, .9], "b": [.3, .1, .2, .7, .4, .6]})
    >>> m.shape
    (2, 2)
    """
    names = list(scores)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p = delong_test(y_true, scores[a], scores[b]).p_value
            out.loc[a, b] = out.loc[b, a] = p
    out.index.name = "model"
    return out


# --------------------------------------------------------------------------------------------
# cutoffs and binary metrics
# --------------------------------------------------------------------------------------------
def youden_cutoff(y_true, score) -> float:
    """Cutoff maximising Youden's J = sensitivity + specificity - 1 (fit it on training scores).

    Candidate cutoffs are the midpoints between consecutive distinct scores (as pROC's
    ``coords(roc, "best", best.method = "youden")``); a subject is called positive when
    ``score >= cutoff``. When several cutoffs tie, the one with the highest specificity (the
    largest cutoff) is returned.

    Examples
    --------
    >>> round(youden_cutoff([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8]), 6)
    0.45
    """
    y = _binary_y(y_true)
    s = _score(score, len(y))
    cases, controls = _split(y, s)
    u = np.unique(s)
    cut = (u[:-1] + u[1:]) / 2
    if len(cut) == 0:
        raise ValueError("all scores are equal: no cutoff can separate the classes")
    sc, sk = np.sort(cases), np.sort(controls)
    sens = 1 - np.searchsorted(sc, cut, "left") / len(sc)
    spec = np.searchsorted(sk, cut, "left") / len(sk)
    j = sens + spec
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))
    return float(cut[best[-1]])


def binary_metrics(
    y_true, score, cutoff: float, *, alpha: float = 0.05, ci: str = "wilson"
) -> pd.DataFrame:
    """Accuracy, sensitivity, specificity, PPV and NPV at ``cutoff`` with counts and CIs.

    Positive call: ``score >= cutoff``. CIs: Wilson score (``ci = "wilson"``, as R
    ``prop.test(k, n, correct = FALSE)$conf.int``) or Clopper–Pearson (``ci = "exact"``, as
    ``binom.test``).

    Returns
    -------
    pandas.DataFrame
        Index ``metric`` (accuracy, sensitivity, specificity, ppv, npv); columns ``estimate,
        numerator, denominator, count`` (e.g. ``"19/26"``), ``ci_low, ci_high``.

    Examples
    --------
    >>> binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.8], 0.5).loc["specificity", "count"]
    '1/2'
    """
    y = _binary_y(y_true)
    s = _score(score, len(y))
    pred = s >= cutoff
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    parts = {
        "accuracy": (tp + tn, len(y)),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }
    rows = []
    for name, (k, n) in parts.items():
        lo, hi = _prop_ci(k, n, alpha, ci)
        rows.append(
            {
                "metric": name,
                "estimate": k / n if n else float("nan"),
                "numerator": k,
                "denominator": n,
                "count": f"{k}/{n}",
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def model_report(
    y_train,
    s_train,
    y_test=None,
    s_test=None,
    *,
    model: str | None = None,
    cutoff: float | None = None,
    method: str = "delong",
    alpha: float = 0.05,
    n_boot: int = 1000,
    rng: RngLike = None,
    ci: str = "wilson",
    extra: Mapping[str, tuple] | None = None,
) -> pd.DataFrame:
    """One tidy row per split: AUC with CI, the training Youden cutoff and the metrics at it.

    The cutoff is fitted on the training split only (unless given) and applied unchanged to
    the test split (and to any ``extra`` splits, e.g. ``{"external": (y, s)}``).

    Returns
    -------
    pandas.DataFrame
        Columns ``model, split, n, auc, auc_ci_low, auc_ci_high, auc_p_value, auc_95ci``
        (formatted ``"0.852 (0.781-0.923)"``), ``cutoff``, and for each of accuracy,
        sensitivity, specificity, ppv, npv: ``<m>``, ``<m>_count``, ``<m>_ci_low``,
        ``<m>_ci_high``.

    Examples
    --------
    >>> g = np.random.default_rng(0); y = np.repeat([0, 1], 20); s = y + g.normal(size=40)
    >>> model_report(y[::2], s[::2], y[1::2], s[1::2], model="demo")[["split", "n"]].values.tolist()
    [['train', 20], ['test', 20]]
    """
    if cutoff is None:
        cutoff = youden_cutoff(y_train, s_train)
    splits = {"train": (y_train, s_train)}
    if y_test is not None:
        splits["test"] = (y_test, s_test)
    splits.update(extra or {})
    g = _rng(rng)
    rows = []
    for split, (y, s) in splits.items():
        r = roc_auc_ci(y, s, method=method, n_boot=n_boot, rng=g, alpha=alpha)
        row = {
            "model": model,
            "split": split,
            "n": int(r.n),
            "auc": r.auc,
            "auc_ci_low": r.ci_low,
            "auc_ci_high": r.ci_high,
            "auc_p_value": r.p_value,
            "auc_95ci": f"{r.auc:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})",
            "cutoff": cutoff,
        }
        bm = binary_metrics(y, s, cutoff, alpha=alpha, ci=ci)
        for m, v in bm.iterrows():
            row[m] = v.estimate
            row[f"{m}_count"] = v["count"]
            row[f"{m}_ci_low"] = v.ci_low
            row[f"{m}_ci_high"] = v.ci_high
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def _prob(prob, n: int) -> np.ndarray:
    p = _score(prob, n, "prob")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("prob must lie in [0, 1]")
    return p


def calibration_curve(
    y_true, prob, *, n_bins: int = 10, strategy: str = "quantile", alpha: float = 0.05
) -> pd.DataFrame:
    """Binned calibration table: mean predicted probability vs observed event rate per bin.

    Parameters
    ----------
    strategy : {"quantile", "uniform"}
        ``"quantile"``: bins with equal numbers of subjects (same grouping rule as
        :func:`hosmer_lemeshow`); ``"uniform"``: ``n_bins`` equal-width bins on [0, 1].

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``bin, n, events, mean_predicted, observed, ci_low, ci_high``
        (Wilson CI of the observed rate). Feed it to :func:`vcfnb.plots.plot_calibration`.

    Examples
    --------
    >>> g = np.random.default_rng(0); p = g.uniform(size=200); y = (g.uniform(size=200) < p).astype(int)
    >>> len(calibration_curve(y, p, n_bins=5))
    5
    """
    y = _binary_y(y_true)
    p = _prob(prob, len(y))
    if strategy == "quantile":
        groups = _quantile_groups(p, n_bins)
    elif strategy == "uniform":
        groups = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    rows = []
    for gi in np.unique(groups):
        m = groups == gi
        k, n = int(y[m].sum()), int(m.sum())
        lo, hi = _prop_ci(k, n, alpha, "wilson")
        rows.append(
            {
                "bin": int(gi),
                "n": n,
                "events": k,
                "mean_predicted": float(p[m].mean()),
                "observed": k / n,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


def calibration_slope_intercept(y_true, prob, *, eps: float = 1e-12) -> pd.Series:
    """Logistic recalibration: calibration slope and intercept (Cox 1958).

    ``slope`` is the coefficient of ``logit(prob)`` in ``glm(y ~ qlogis(p), binomial)``;
    ``intercept`` (calibration-in-the-large) is the intercept of
    ``glm(y ~ offset(qlogis(p)), binomial)`` — the convention of ``rms::val.prob``'s
    "Intercept"/"Slope" pair is ``glm(y ~ qlogis(p))`` for both, also returned as
    ``intercept_slope_model``. Probabilities are clipped to ``[eps, 1 - eps]``.

    Returns
    -------
    pandas.Series
        ``intercept, slope, intercept_slope_model, slope_ci_low, slope_ci_high, n, separated``.
        Perfect calibration: intercept 0, slope 1. ``separated`` is True when the scores
        separate the outcome (every event's probability at or above every non-event's, or the
        reverse, or statsmodels finds the fitted probabilities at 0 and 1): the slope's
        maximum-likelihood estimate does not exist there (R's ``glm``
        warns and returns an arbitrary large number), so ``slope``, its CI and
        ``intercept_slope_model`` are NaN; ``intercept`` (one parameter, with the logit as
        offset) is still estimated.

    Examples
    --------
    >>> g = np.random.default_rng(0); p = g.uniform(.05, .95, 500); y = (g.uniform(size=500) < p).astype(int)
    >>> r = calibration_slope_intercept(y, p); bool(abs(r.slope - 1) < 0.3)
    True
    >>> r = calibration_slope_intercept([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9])
    >>> bool(r.separated), bool(np.isnan(r.slope)), round(float(r.intercept), 3)  # root of sum(y - expit(a + logit(p)))
    (True, True, 0.158)
    """
    import warnings

    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    y = _binary_y(y_true)
    p = np.clip(_prob(prob, len(y)), eps, 1 - eps)
    lp = np.log(p / (1 - p))
    fam = sm.families.Binomial()
    separated = bool(np.ptp(lp) > 0 and 0 < y.sum() < len(y) and (
        lp[y == 1].min() >= lp[y == 0].max() or lp[y == 1].max() <= lp[y == 0].min()))
    nan = float("nan")
    slope = icpt_s = lo = hi = nan
    # exp() of extreme logits overflows to inf inside the IRLS iterations (probability 0 or 1,
    # as intended); numpy's overflow warning is not a result. statsmodels' "perfect
    # separation or prediction" warning fires when fitted probabilities reach 0 or 1: for the
    # slope model that is (quasi-)separation, so no slope; for the one-parameter intercept
    # model it only reflects extreme offsets, and its estimate stands
    with warnings.catch_warnings(record=True) as caught, np.errstate(over="ignore"):
        warnings.simplefilter("always")
        if not separated:
            fit_s = sm.GLM(y, sm.add_constant(lp), family=fam).fit(tol=1e-14, maxiter=200)
            if any(issubclass(w.category, PerfectSeparationWarning) for w in caught):
                separated = True
            else:
                slope, icpt_s = float(fit_s.params[1]), float(fit_s.params[0])
                lo, hi = (float(v) for v in np.asarray(fit_s.conf_int())[1])
        fit_i = sm.GLM(y, np.ones((len(y), 1)), family=fam, offset=lp).fit(tol=1e-14,
                                                                            maxiter=200)
    for w in caught:
        if not issubclass(w.category, (PerfectSeparationWarning, RuntimeWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pd.Series(
        {
            "intercept": float(fit_i.params[0]),
            "slope": slope,
            "intercept_slope_model": icpt_s,
            "slope_ci_low": lo,
            "slope_ci_high": hi,
            "n": len(y),
            "separated": separated,
        }
    )


def _quantile_groups(p: np.ndarray, groups: int) -> np.ndarray:
    """Group index from R ``cut(p, unique(quantile(p, seq(0, 1, 1/g))), include.lowest = TRUE)``."""
    br = np.unique(np.quantile(p, np.linspace(0, 1, groups + 1)))  # R quantile type 7
    if len(br) < 2:
        return np.zeros(len(p), dtype=int)
    # intervals (b_i, b_{i+1}], the first closed on the left
    idx = np.searchsorted(br, p, side="left") - 1
    return np.clip(idx, 0, len(br) - 2)


def hosmer_lemeshow(y_true, prob, groups: int = 10, dof: str = "g-2") -> pd.Series:
    """Hosmer–Lemeshow goodness-of-fit test with quantile groups.

    Grouping rule (as ``ResourceSelection::hoslem.test``): breaks are the unique type-7
    quantiles of ``prob`` at ``0, 1/g, ..., 1``; groups are the intervals ``(b_i, b_{i+1}]``,
    the first closed on the left. ``statistic = Σ (O - E)² / E`` over events and non-events of
    every group, ``dof = (number of groups formed) - 2`` (= ``g - 2`` unless ties merge
    groups; ``dof="g"`` gives ``g``, Hosmer and Lemeshow's recommendation for a model
    evaluated on independent data), ``p_value`` from the χ² distribution.

    Returns
    -------
    pandas.Series
        ``statistic, dof, p_value, groups`` (number of groups formed).

    Examples
    --------
    >>> g = np.random.default_rng(0); p = g.uniform(size=300); y = (g.uniform(size=300) < p).astype(int)
    >>> int(hosmer_lemeshow(y, p).dof)
    8
    """
    y = _binary_y(y_true)
    p = _prob(prob, len(y))
    grp = _quantile_groups(p, groups)
    ng = len(np.unique(grp))
    stat = 0.0
    for gi in np.unique(grp):
        m = grp == gi
        o1, e1 = y[m].sum(), p[m].sum()
        o0, e0 = m.sum() - o1, m.sum() - e1
        stat += (o1 - e1) ** 2 / e1 + (o0 - e0) ** 2 / e0
    if dof not in ("g-2", "g"):
        raise ValueError(f"dof must be 'g-2' (fitted data) or 'g' (independent data), got {dof!r}")
    dof = ng - 2 if dof == "g-2" else ng
    pval = float(sps.chi2.sf(stat, dof)) if dof > 0 else float("nan")
    return pd.Series(
        {"statistic": float(stat), "dof": int(dof), "p_value": pval, "groups": int(ng)}
    )


# --------------------------------------------------------------------------------------------
# decision curves
# --------------------------------------------------------------------------------------------
def _thresholds(thresholds) -> np.ndarray:
    t = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if np.any((t < 0) | (t >= 1)):
        raise ValueError("thresholds must lie in [0, 1)")
    return t


def net_benefit(y_true, prob, thresholds) -> pd.DataFrame:
    """Net benefit of treating when ``prob >= threshold`` (Vickers & Elkin 2006).

    ``NB(t) = TP/n - FP/n * t / (1 - t)``.

    Returns
    -------
    pandas.DataFrame
        ``threshold, net_benefit, tp, fp, n``.

    Examples
    --------
    >>> net_benefit([0, 1, 1, 0], [.2, .7, .9, .6], [0.5]).net_benefit.round(3).tolist()
    [0.25]
    """
    y = _binary_y(y_true)
    p = _prob(prob, len(y))
    t = _thresholds(thresholds)
    pred = p[None, :] >= t[:, None]
    tp = (pred & (y == 1)).sum(1)
    fp = (pred & (y == 0)).sum(1)
    n = len(y)
    nb = tp / n - fp / n * t / (1 - t)
    return pd.DataFrame({"threshold": t, "net_benefit": nb, "tp": tp, "fp": fp, "n": n})


def decision_curve(y_true=None, probs: Mapping[str, Sequence[float]] | None = None,
                   thresholds=None, *, data: pd.DataFrame | None = None,
                   split: str | None = None) -> pd.DataFrame:
    """Decision-curve table for several models plus the treat-all and treat-none strategies.

    Treat all: ``NB = prev - (1 - prev) t / (1 - t)``; treat none: 0.

    Either arrays (``y_true`` and ``probs``, a mapping model → probabilities) or a predictions
    table: ``data=`` with ``split=`` (one split; probability models only, patients matched on
    ``patient_id``). ``thresholds`` defaults to 0.01, 0.02, …, 0.99; pass the study's grid
    explicitly so the notebook cell shows it.

    Returns
    -------
    pandas.DataFrame
        Long table ``model, threshold, net_benefit`` (models in the order given, then
        ``"Treat all"``, ``"Treat none"``). Feed it to :func:`vcfnb.plots.plot_decision_curve`.

    Examples
    --------
    >>> dc = decision_curve([0, 1, 1, 0], {"m": [.2, .7, .9, .6]}, [0.1, 0.5])
    >>> sorted(dc.model.unique())
    ['Treat all', 'Treat none', 'm']
    """
    if data is not None:
        part = _check_predictions(data)
        if split is None:
            raise ValueError("decision_curve(data=...) needs split=")
        part = part[(part["split"] == split) & (part["score_kind"] == "probability")]
        if part.empty:
            raise ValueError(f"no probability rows of split {split!r} for a decision curve")
        wide = part.pivot_table(index="patient_id", columns="model", values="score",
                                aggfunc="first").dropna()
        y_true = part.groupby("patient_id")["y_true"].first().loc[wide.index]
        probs = {m: wide[m].to_numpy() for m in dict.fromkeys(part["model"])}
    y = _binary_y(y_true)
    t = _thresholds(np.arange(0.01, 1.0, 0.01) if thresholds is None else thresholds)
    parts = [
        net_benefit(y, p, t)[["threshold", "net_benefit"]].assign(model=name)
        for name, p in probs.items()
    ]
    prev = y.mean()
    parts.append(
        pd.DataFrame(
            {"threshold": t, "net_benefit": prev - (1 - prev) * t / (1 - t), "model": "Treat all"}
        )
    )
    parts.append(pd.DataFrame({"threshold": t, "net_benefit": 0.0, "model": "Treat none"}))
    return pd.concat(parts, ignore_index=True)[["model", "threshold", "net_benefit"]]


# --------------------------------------------------------------------------------------------
# baseline table
# --------------------------------------------------------------------------------------------
def baseline_table(
    data: pd.DataFrame,
    group: str,
    variables: Sequence[str],
    categorical: Sequence[str] | None = None,
    *,
    normality_alpha: float = 0.05,
    equal_var: bool = True,
    digits: int = 1,
    rng: RngLike = None,
    categorical_test: str = "auto",
) -> pd.DataFrame:
    """Baseline ("table 1") comparison of variables between the levels of ``group``.

    Continuous variables: if the Shapiro–Wilk test (scipy, = R ``shapiro.test``) does not reject normality
    (p >= ``normality_alpha``) in every group, ``mean ± SD`` and Student's t-test (Welch with
    ``equal_var=False``; one-way ANOVA for > 2 groups), otherwise ``median [Q1, Q3]`` (type-7
    quartiles) and the Mann–Whitney U test (normal approximation with tie and continuity
    correction, as R ``wilcox.test(exact = FALSE)``; Kruskal–Wallis for > 2 groups).
    Categorical variables (non-numeric dtype, or listed in ``categorical``): ``n (%)`` per
    level, χ² test (Yates-corrected for 2×2, as R ``chisq.test``) unless an expected count is
    < 5, then Fisher's exact test: scipy for 2×2; exact enumeration for R×2 / 2×C tables (the
    usual two-group case, as R ``fisher.test``); Monte Carlo (scipy, 9999 tables drawn with
    ``rng``) for larger tables. Missing values are dropped per variable.
    ``categorical_test="pearson"`` uses Pearson's χ² without continuity correction for every
    categorical table whatever its expected counts (SPSS's "Pearson Chi-Square", the test many
    papers report; R ``chisq.test(correct = FALSE)``).

    Returns
    -------
    pandas.DataFrame
        Columns ``variable, level`` (empty for continuous), one column per group level (string
        of the level, header includes nothing else), ``summary`` (``"mean ± SD"``,
        ``"median [IQR]"`` or ``"n (%)"``), ``test``, ``statistic``, ``p_value``, ``p``
        (formatted, ``"<0.001"``). Categorical variables get one row per level, with the test
        repeated on each row.

    Examples
    --------
    >>> df = pd.DataFrame({"g": [0, 0, 0, 1, 1, 1], "age": [60, 62, 65, 70, 71, 75], "sex": list("MFMFFF")})
    >>> baseline_table(df, "g", ["age", "sex"]).variable.tolist()
    ['age', 'sex', 'sex']
    """
    if group not in data:
        raise KeyError(f"group column {group!r} not in data")
    categorical = set(categorical or [])
    levels = sorted(data[group].dropna().unique())
    if len(levels) < 2:
        raise ValueError(f"group {group!r} has fewer than two levels")
    cols = [str(lv) for lv in levels]
    rows = []
    for var in variables:
        if var not in data:
            raise KeyError(f"variable {var!r} not in data")
        d = data[[group, var]].dropna()
        is_cat = (
            var in categorical
            or not pd.api.types.is_numeric_dtype(d[var])
            or pd.api.types.is_bool_dtype(d[var])
        )
        if not is_cat:
            xs = [d.loc[d[group] == lv, var].to_numpy(float) for lv in levels]
            normal = all(
                len(x) >= 3 and np.ptp(x) > 0 and float(sps.shapiro(x).pvalue) >= normality_alpha
                for x in xs
            )
            row = {"variable": var, "level": ""}
            if normal:
                for c, x in zip(cols, xs):
                    row[c] = f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"
                if len(xs) == 2:
                    res = sps.ttest_ind(xs[0], xs[1], equal_var=equal_var)
                    test = "t-test" if equal_var else "Welch t-test"
                else:
                    res = sps.f_oneway(*xs)
                    test = "ANOVA"
                summary = "mean ± SD"
            else:
                for c, x in zip(cols, xs):
                    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
                    row[c] = f"{med:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"
                if len(xs) == 2:
                    res = sps.mannwhitneyu(
                        xs[0],
                        xs[1],
                        alternative="two-sided",
                        use_continuity=True,
                        method="asymptotic",
                    )
                    test = "Mann-Whitney U"
                else:
                    res = sps.kruskal(*xs)
                    test = "Kruskal-Wallis"
                summary = "median [IQR]"
            row.update(
                summary=summary,
                test=test,
                statistic=float(res.statistic),
                p_value=float(res.pvalue),
            )
            rows.append(row)
        else:
            tab = pd.crosstab(d[var], d[group]).reindex(columns=levels, fill_value=0)
            obs = tab.to_numpy()
            if categorical_test not in ("auto", "pearson"):
                raise ValueError("categorical_test must be 'auto' or 'pearson', got "
                                 f"{categorical_test!r}")
            if obs.shape[0] < 2:
                test, stat, p = "", float("nan"), float("nan")
            elif categorical_test == "pearson":
                chi = sps.chi2_contingency(obs, correction=False)
                test, stat, p = "Pearson chi-square", float(chi.statistic), float(chi.pvalue)
            else:
                chi = sps.chi2_contingency(obs, correction=True)
                if np.any(chi.expected_freq < 5):
                    test, stat, p = "Fisher exact", float("nan"), _fisher_exact(obs, rng=rng)
                else:
                    test, stat, p = "chi-square", float(chi.statistic), float(chi.pvalue)
            colsum = obs.sum(0)
            for i, lv in enumerate(tab.index):
                row = {"variable": var, "level": str(lv)}
                for j, c in enumerate(cols):
                    row[c] = (
                        f"{obs[i, j]} ({100 * obs[i, j] / colsum[j]:.{digits}f}%)"
                        if colsum[j]
                        else "0"
                    )
                row.update(summary="n (%)", test=test, statistic=stat, p_value=p)
                rows.append(row)
    out = pd.DataFrame(
        rows, columns=["variable", "level", *cols, "summary", "test", "statistic", "p_value"]
    )
    out["p"] = out["p_value"].map(_fmt_p)
    return out


def _fisher_exact(obs: np.ndarray, rng: RngLike = None) -> float:
    """Two-sided Fisher exact p: 2×2 scipy, R×2 by enumeration (R ``fisher.test``), else Monte Carlo."""
    from scipy.special import gammaln

    obs = np.asarray(obs, dtype=int)
    obs = obs[obs.sum(1) > 0][:, obs.sum(0) > 0]
    if obs.shape[0] < 2 or obs.shape[1] < 2:
        return 1.0
    if obs.shape == (2, 2):
        return float(sps.fisher_exact(obs).pvalue)
    if obs.shape[1] != 2 and obs.shape[0] == 2:
        obs = obs.T
    if obs.shape[1] != 2:
        return float(
            sps.fisher_exact(
                obs, method=sps.MonteCarloMethod(n_resamples=9999, rng=_rng(rng))
            ).pvalue
        )
    rows, c1 = obs.sum(1), int(obs[:, 0].sum())

    def logp(x):  # multivariate hypergeometric log-probability of first column x
        return float(np.sum(gammaln(rows + 1) - gammaln(x + 1) - gammaln(rows - x + 1)))

    lp_obs = logp(obs[:, 0])
    lbinom = float(gammaln(rows.sum() + 1) - gammaln(c1 + 1) - gammaln(rows.sum() - c1 + 1))
    cap = np.r_[np.cumsum(rows[::-1])[::-1], 0]  # max achievable from row i onwards
    # every table with these margins, enumerated row by row as arrays of (count still to place
    # in column 1, partial log-probability): vectorised, so ~10^6 tables take a second
    left = np.array([c1], dtype=np.int64)
    acc = np.zeros(1)
    for i, r in enumerate(rows):
        v = np.arange(r + 1)
        term = gammaln(r + 1) - gammaln(v + 1) - gammaln(r - v + 1)
        new_left = left[:, None] - v[None, :]
        ok = (new_left >= 0) & (new_left <= cap[i + 1])
        left = new_left[ok]
        acc = (acc[:, None] + term[None, :])[ok]
    keep = acc <= lp_obs + 1e-7  # R's relative tolerance 1 + 1e-7
    return float(min(1.0, np.exp(acc[keep] - lbinom).sum()))


# --------------------------------------------------------------------------------------------
# logistic regression tables
# --------------------------------------------------------------------------------------------
def _design(data: pd.DataFrame, predictors: Sequence[str]) -> pd.DataFrame:
    """Numeric design matrix; non-numeric predictors become ``name[level]`` dummies (first level dropped)."""
    parts = []
    for p in predictors:
        if p not in data:
            raise KeyError(f"predictor {p!r} not in data")
        col = data[p]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            parts.append(col.astype(float).rename(p))
        else:
            dm = pd.get_dummies(col.astype("category"), drop_first=True, dtype=float)
            dm.columns = [f"{p}[{c}]" for c in dm.columns]
            parts.append(dm)
    return pd.concat(parts, axis=1)


def _logit_fit(data: pd.DataFrame, outcome: str, predictors: Sequence[str], alpha: float):
    import warnings

    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    d = data[[outcome, *predictors]].dropna()
    y = _binary_y(d[outcome].to_numpy(), outcome)
    X = sm.add_constant(_design(d, predictors), has_constant="add")
    # separation (a predictor that splits the outcome, common on small training sets) makes the
    # maximum-likelihood fit diverge: statsmodels warns, R's glm says "fitted probabilities
    # numerically 0 or 1". The fit's numbers are kept as R gives them, and the table's
    # ``converged`` column says so instead of warnings in the report
    quiet = (ConvergenceWarning, PerfectSeparationWarning, RuntimeWarning)
    with warnings.catch_warnings(record=True) as caught, np.errstate(over="ignore"):
        warnings.simplefilter("always")
        fit = sm.Logit(y, X).fit(disp=0, method="newton", maxiter=100)
        ci = np.exp(fit.conf_int(alpha))
        odds = np.exp(fit.params.to_numpy())
    for w in caught:
        if not issubclass(w.category, quiet):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    converged = bool(fit.mle_retvals.get("converged", True)) and not any(
        issubclass(w.category, (ConvergenceWarning, PerfectSeparationWarning)) for w in caught)
    tab = pd.DataFrame(
        {
            "term": X.columns,
            "coef": fit.params.to_numpy(),
            "se": fit.bse.to_numpy(),
            "or": odds,
            "ci_low": ci.iloc[:, 0].to_numpy(),
            "ci_high": ci.iloc[:, 1].to_numpy(),
            "p_value": fit.pvalues.to_numpy(),
            "converged": converged,
        }
    )
    return tab[tab.term != "const"].reset_index(drop=True), len(d)


def logistic_table(
    data: pd.DataFrame,
    outcome: str,
    predictors: Sequence[str],
    multivariable: bool = True,
    *,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Odds ratios with Wald (1 - alpha) CIs and p-values from logistic regression (statsmodels Logit).

    ``multivariable=True``: one model with all predictors; ``False``: one model per predictor.
    Same numbers as R ``glm(y ~ ..., binomial)`` with ``exp(cbind(coef, confint.default))``.
    Non-numeric predictors are dummy-coded (first level = reference), terms ``name[level]``.

    Returns
    -------
    pandas.DataFrame
        ``term, coef, se, or, ci_low, ci_high, p_value, converged, n, or_95ci`` (formatted
        ``"2.31 (1.20-4.45)"``). ``converged`` is False when the fit did not converge
        (separation: a predictor splits the outcome); its numbers are then those R's ``glm``
        stops at, not estimates, and ``or_95ci`` ends with "(not converged)".

    Examples
    --------
    >>> g = np.random.default_rng(0); df = pd.DataFrame({"x": g.normal(size=80), "z": g.normal(size=80)})
    >>> df["y"] = (df.x + g.normal(size=80) > 0).astype(int)
    >>> logistic_table(df, "y", ["x", "z"]).term.tolist()
    ['x', 'z']
    """
    if multivariable:
        tab, n = _logit_fit(data, outcome, predictors, alpha)
        tab["n"] = n
    else:
        parts = []
        for p in predictors:
            t, n = _logit_fit(data, outcome, [p], alpha)
            parts.append(t.assign(n=n))
        tab = pd.concat(parts, ignore_index=True)
    tab["or_95ci"] = [
        f"{o:.2f} ({lo:.2f}-{hi:.2f})" + ("" if ok else " (not converged)")
        for o, lo, hi, ok in zip(tab["or"], tab.ci_low, tab.ci_high, tab["converged"])
    ]
    return tab


def univariate_multivariate(
    data: pd.DataFrame,
    outcome: str,
    predictors: Sequence[str],
    *,
    enter_p: float | None = 0.05,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Univariate then multivariable logistic regression side by side (supplementary table 1 style).

    Predictors whose univariate p (smallest over their terms) is below ``enter_p`` enter the
    multivariable model (all predictors when ``enter_p`` is None).

    Returns
    -------
    pandas.DataFrame
        One row per term: ``term, or_uni, ci_low_uni, ci_high_uni, p_uni, or_95ci_uni,
        or_multi, ci_low_multi, ci_high_multi, p_multi, or_95ci_multi`` (NaN/empty for terms
        not entered).

    Examples
    --------
    >>> g = np.random.default_rng(0); df = pd.DataFrame({"x": g.normal(size=80), "z": g.normal(size=80)})
    >>> df["y"] = (df.x + g.normal(size=80) > 0).astype(int)
    >>> list(univariate_multivariate(df, "y", ["x", "z"]).columns[:2])
    ['term', 'or_uni']
    """
    keep = ["term", "or", "ci_low", "ci_high", "p_value", "or_95ci"]
    uni = logistic_table(data, outcome, predictors, multivariable=False, alpha=alpha)[keep]
    if enter_p is None:
        entered = list(predictors)
    else:
        entered = []
        for p in predictors:
            terms = uni[(uni.term == p) | uni.term.str.startswith(f"{p}[")]
            if (terms.p_value < enter_p).any():
                entered.append(p)
    uni = uni.rename(
        columns={
            "or": "or_uni",
            "ci_low": "ci_low_uni",
            "ci_high": "ci_high_uni",
            "p_value": "p_uni",
            "or_95ci": "or_95ci_uni",
        }
    )
    if entered:
        multi = logistic_table(data, outcome, entered, multivariable=True, alpha=alpha)[keep]
    else:
        multi = pd.DataFrame(columns=keep)
    multi = multi.rename(
        columns={
            "or": "or_multi",
            "ci_low": "ci_low_multi",
            "ci_high": "ci_high_multi",
            "p_value": "p_multi",
            "or_95ci": "or_95ci_multi",
        }
    )
    out = uni.merge(multi, on="term", how="left")
    out["or_95ci_multi"] = out["or_95ci_multi"].fillna("")
    return out


# --------------------------------------------------------------------------------------------
# propensity-score matching
# --------------------------------------------------------------------------------------------
def _ps_logit(
    data: pd.DataFrame, treatment: str, covariates: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    import statsmodels.api as sm

    t = _binary_y(data[treatment].to_numpy(), treatment)
    X = sm.add_constant(_design(data, covariates), has_constant="add")
    fit = sm.Logit(t, X).fit(disp=0, method="newton", maxiter=100)
    return t, np.asarray(X @ fit.params, dtype=float)


def propensity_match(
    data: pd.DataFrame,
    treatment: str,
    covariates: Sequence[str],
    ratio: int = 2,
    caliper: float | None = None,
    rng: RngLike = None,
    *,
    distance: str = "logit",
    order: str = "largest",
) -> pd.DataFrame:
    """Greedy 1:``ratio`` nearest-neighbour propensity-score matching without replacement.

    The propensity score is a logistic regression of ``treatment`` (1 = treated, e.g. fracture
    cases) on ``covariates`` (statsmodels Logit, same fit as R ``glm``). Matching distance:
    ``|logit(ps_i) - logit(ps_j)|`` (``distance="logit"``; MatchIt ``distance = "glm", link =
    "linear.logit"``) or on the score itself (``distance="ps"``; MatchIt's default link).
    As in ``MatchIt::matchit(method = "nearest")``: treated units are visited in ``order``
    (``"largest"`` distance first, MatchIt's default for propensity scores; ``"smallest"``,
    ``"data"`` or ``"random"`` — the only use of ``rng``), every treated unit gets its first
    control before any gets its second (``ratio`` rounds), ties go to the control earliest in
    ``data``. ``caliper`` is in pooled standard deviations of the distance,
    ``sqrt((var_treated + var_control) / 2)`` (MatchIt's ``std.caliper = TRUE``); treated units
    left without any control are dropped.

    Returns
    -------
    pandas.DataFrame
        The matched rows of ``data`` (original index kept; treated units in matching order
        each followed by their controls) with added columns ``distance`` (the matching
        distance), ``propensity`` (the score), ``match_id`` (1, 2, ... per matched set, like
        MatchIt's ``subclass``) and ``weight`` (1 for treated; ``1 / number of controls in the
        set`` rescaled so control weights sum to the number of matched controls, as MatchIt).

    Examples
    --------
    >>> g = np.random.default_rng(0); df = pd.DataFrame({"age": g.normal(60, 8, 60), "sex": g.integers(0, 2, 60)})
    >>> df["case"] = (g.uniform(size=60) < 0.25).astype(int)
    >>> m = propensity_match(df, "case", ["age", "sex"], ratio=2)
    >>> bool((m.groupby("match_id").case.sum() == 1).all())
    True
    """
    if ratio < 1:
        raise ValueError("ratio must be >= 1")
    d = data[[treatment, *covariates]]
    if d.isna().any().any():
        bad = d.columns[d.isna().any()].tolist()
        raise ValueError(f"missing values in {bad}: drop or impute them before matching")
    t, lp = _ps_logit(data, treatment, covariates)
    ps = 1 / (1 + np.exp(-lp))
    if distance == "logit":
        dist = lp
    elif distance == "ps":
        dist = ps
    else:
        raise ValueError(f"distance must be 'logit' or 'ps', got {distance!r}")
    treated = np.flatnonzero(t == 1)
    controls = np.flatnonzero(t == 0)
    if order == "largest":
        treated = treated[np.argsort(-dist[treated], kind="stable")]
    elif order == "smallest":
        treated = treated[np.argsort(dist[treated], kind="stable")]
    elif order == "random":
        treated = _rng(rng).permutation(treated)
    elif order != "data":
        raise ValueError(f"order must be 'largest', 'smallest', 'data' or 'random', got {order!r}")
    pooled_sd = float(np.sqrt((np.var(dist[t == 1], ddof=1) + np.var(dist[t == 0], ddof=1)) / 2))
    cal = None if caliper is None else caliper * pooled_sd
    available = np.ones(len(controls), dtype=bool)
    matches: dict[int, list[int]] = {int(i): [] for i in treated}
    for _ in range(ratio):
        for i in treated:
            if not available.any():
                break
            dd = np.abs(dist[controls] - dist[i])
            dd[~available] = np.inf
            j = int(np.argmin(dd))
            if not np.isfinite(dd[j]) or (cal is not None and dd[j] > cal):
                continue
            matches[int(i)].append(int(controls[j]))
            available[j] = False
    rows, mid, w = [], [], []
    k = 0
    for i in treated:
        cs = matches[int(i)]
        if not cs:
            continue
        k += 1
        rows += [int(i), *cs]
        mid += [k] * (1 + len(cs))
        w += [1.0] + [1.0 / len(cs)] * len(cs)
    out = data.iloc[rows].copy()
    out["distance"] = dist[rows]
    out["propensity"] = ps[rows]
    out["match_id"] = mid
    w = np.asarray(w)
    is_c = t[rows] == 0
    if is_c.any():
        w[is_c] *= is_c.sum() / w[is_c].sum()
    out["weight"] = w
    return out


def balance_table(
    data: pd.DataFrame,
    treatment: str,
    covariates: Sequence[str],
    matched: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Covariate balance before and after matching: means and standardised mean differences.

    SMD = (mean treated - mean control) / SD of the treated group in the full (unmatched)
    sample, the ATT convention of ``summary(matchit(...))``; binary 0/1 covariates use
    ``sqrt(p (1 - p))`` of the treated group (as MatchIt). After matching, control means are
    weighted by the ``weight`` column of ``matched`` when present. Non-numeric covariates are
    dummy-coded.

    Returns
    -------
    pandas.DataFrame
        ``covariate, mean_treated_before, mean_control_before, smd_before`` and, with
        ``matched``, ``mean_treated_after, mean_control_after, smd_after``.

    Examples
    --------
    >>> g = np.random.default_rng(0); df = pd.DataFrame({"age": g.normal(60, 8, 60), "case": np.r_[[1] * 15, [0] * 45]})
    >>> list(balance_table(df, "case", ["age"]).columns)
    ['covariate', 'mean_treated_before', 'mean_control_before', 'smd_before']
    """
    X = _design(data, covariates)
    t = _binary_y(data[treatment].to_numpy(), treatment)
    rows = []
    for c in X.columns:
        x = X[c].to_numpy(float)
        xt, xc = x[t == 1], x[t == 0]
        binary = set(np.unique(x[~np.isnan(x)])) <= {0.0, 1.0}
        sd = np.sqrt(np.nanmean(xt) * (1 - np.nanmean(xt))) if binary else np.nanstd(xt, ddof=1)
        row = {
            "covariate": c,
            "mean_treated_before": np.nanmean(xt),
            "mean_control_before": np.nanmean(xc),
            "smd_before": (np.nanmean(xt) - np.nanmean(xc)) / sd if sd > 0 else np.nan,
        }
        if matched is not None:
            Xm = _design(matched, covariates).reindex(columns=X.columns, fill_value=0.0)
            tm = _binary_y(matched[treatment].to_numpy(), treatment)
            wm = matched["weight"].to_numpy(float) if "weight" in matched else np.ones(len(matched))
            xm = Xm[c].to_numpy(float)
            mt = np.average(xm[tm == 1], weights=wm[tm == 1])
            mc = np.average(xm[tm == 0], weights=wm[tm == 0])
            row.update(
                mean_treated_after=mt,
                mean_control_after=mc,
                smd_after=(mt - mc) / sd if sd > 0 else np.nan,
            )
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# nomogram
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Nomogram:
    """rms-style nomogram of a logistic model.

    Attributes
    ----------
    points : DataFrame
        ``variable, value, points`` — each predictor's scale (the values drawn as ticks) and the
        points at each value.
    intercept : float
        Model intercept.
    coef : dict
        Coefficient per predictor.
    scale : float
        Points per unit of linear predictor (``100 / largest effect range``).
    lp_at_zero : float
        Linear predictor at 0 total points (intercept + each predictor at its lowest-points value).
    """

    points: pd.DataFrame
    intercept: float
    coef: dict
    scale: float
    lp_at_zero: float

    def total_points_to_lp(self, total) -> np.ndarray:
        """Linear predictor for total points."""
        return self.lp_at_zero + np.asarray(total, float) / self.scale

    def total_points_to_probability(self, total) -> np.ndarray:
        """Predicted probability ``plogis(lp)`` for total points."""
        return 1 / (1 + np.exp(-self.total_points_to_lp(total)))

    def probability_to_total_points(self, prob) -> np.ndarray:
        """Total points giving probability ``prob`` (the probability axis of the drawing)."""
        p = np.asarray(prob, float)
        return (np.log(p / (1 - p)) - self.lp_at_zero) * self.scale

    def score(self, data: pd.DataFrame) -> pd.Series:
        """Total points of each row of ``data`` (linear in each predictor, any value allowed)."""
        tot = np.zeros(len(data))
        for v, b in self.coef.items():
            vals = self.points.loc[self.points.variable == v, "value"].to_numpy(float)
            tot += (b * data[v].to_numpy(float) - np.min(b * vals)) * self.scale
        return pd.Series(tot, index=data.index, name="total_points")

    def probability_axis(
        self, probs=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    ) -> pd.DataFrame:
        """``probability, total_points`` for the tick probabilities (as rms ``fun.at``)."""
        p = np.asarray(probs, float)
        return pd.DataFrame({"probability": p, "total_points": self.probability_to_total_points(p)})


def _pretty(lo: float, hi: float, n: int = 5) -> np.ndarray:
    """Round tick values covering [lo, hi] (R ``pretty``-like), restricted to the range."""
    if hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((s * mag for s in (1, 2, 5, 10) if s * mag >= raw), default=10 * mag)
    ticks = np.arange(np.ceil(lo / step) * step, hi + step * 1e-9, step)
    return ticks if len(ticks) >= 2 else np.array([lo, hi])


def nomogram_points(
    coef: Mapping[str, float],
    intercept: float,
    values: Mapping[str, Sequence[float]] | None = None,
    *,
    data: pd.DataFrame | None = None,
    max_points: float = 100.0,
) -> Nomogram:
    """Points table of a logistic-regression nomogram, rms convention.

    For predictor ``j`` with coefficient ``b_j`` and scale values ``x``, the effect is
    ``b_j x``; the predictor whose effect range over its values is the largest gets
    ``0..max_points`` points, the others proportionally: ``points = (b_j x - min b_j x) *
    scale`` with ``scale = max_points / max_j range(b_j x)``. Total points map to the linear
    predictor ``lp = lp_at_zero + total / scale`` and probability ``plogis(lp)``. This is what
    ``rms::nomogram(lrm_fit, fun = plogis, <var> = values)`` computes.

    Parameters
    ----------
    coef : mapping
        Coefficient per predictor (no intercept), e.g. ``fit.params.drop("const")``.
    intercept : float
        Intercept of the logistic model.
    values : mapping, optional
        Tick values of each predictor's scale. Missing predictors are derived from ``data``:
        ``[0, 1]`` for binary columns, otherwise round ticks between the ``q`` and ``1 - q``
        quantiles with ``q = 10 / max(n, 200)`` (rms ``datadist`` display range).
    data : DataFrame, optional
        Data the model was fitted on (only needed for predictors missing from ``values``).
    max_points : float
        Points of the widest-range predictor (100 in rms).

    Returns
    -------
    Nomogram
        ``.points`` DataFrame ``variable, value, points``; conversion helpers; draw it with
        :func:`vcfnb.plots.plot_nomogram`.

    Examples
    --------
    >>> nomo = nomogram_points({"age": 0.05, "score": 2.0}, -4.0, {"age": [40, 60, 80], "score": [-1, 0, 1, 2]})
    >>> nomo.points.groupby("variable").points.max().round(2).to_dict()
    {'age': 33.33, 'score': 100.0}
    """
    coef = {str(k): float(v) for k, v in dict(coef).items()}
    vals: dict[str, np.ndarray] = {}
    for v in coef:
        if values is not None and v in values:
            vals[v] = np.asarray(values[v], float)
        elif data is not None and v in data:
            x = data[v].dropna().to_numpy(float)
            if set(np.unique(x)) <= {0.0, 1.0}:
                vals[v] = np.array([0.0, 1.0])
            else:
                q = 10 / max(len(x), 200)
                lo, hi = np.quantile(x, [q, 1 - q])
                vals[v] = _pretty(lo, hi)
        else:
            raise ValueError(
                f"no scale values for predictor {v!r}: pass values={{'{v}': [...]}} or data"
            )
    eff = {v: coef[v] * vals[v] for v in coef}
    rng_max = max(float(np.ptp(e)) for e in eff.values())
    if rng_max <= 0:
        raise ValueError("all predictor effects are zero: cannot scale the nomogram")
    scale = max_points / rng_max
    rows = []
    for v in coef:
        e = eff[v]
        for x, ei in zip(vals[v], e):
            rows.append({"variable": v, "value": float(x), "points": float((ei - e.min()) * scale)})
    lp0 = float(intercept) + sum(float(e.min()) for e in eff.values())
    return Nomogram(
        points=pd.DataFrame(rows),
        intercept=float(intercept),
        coef=coef,
        scale=float(scale),
        lp_at_zero=lp0,
    )


# --------------------------------------------------------------------------------------------
# evaluation core: statistics over the predictions table
# --------------------------------------------------------------------------------------------
#: columns of the long predictions table every study writes (``tables/predictions.csv``)
PREDICTION_COLUMNS = ["model", "split", "patient_id", "y_true", "score", "score_kind"]
#: the values ``split`` may take in the predictions table and in metrics.json
SPLITS = ("train", "train_oof", "test", "external", "cv", "final")


def _check_predictions(data: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PREDICTION_COLUMNS if c not in data.columns]
    if missing:
        raise ValueError(f"predictions table lacks column(s) {missing}; expected "
                         f"{PREDICTION_COLUMNS} (+ fold, repeat)")
    bad = sorted(set(data["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split value(s) {bad}; allowed: {list(SPLITS)}")
    kinds = sorted(set(data["score_kind"]) - {"probability", "decision"})
    if kinds:
        raise ValueError(f"score_kind must be 'probability' or 'decision', got {kinds}")
    return data


def _by(by) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _groups_of(data: pd.DataFrame, by) -> list[tuple[dict, pd.DataFrame]]:
    keys = _by(by)
    out = []
    for key, part in data.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(keys, key)), part))
    return out


def _fold_aucs(part: pd.DataFrame) -> tuple[np.ndarray, int, int]:
    """AUC of every (repeat, fold) of CV predictions; number of folds K and repeats R."""
    if "fold" not in part:
        raise ValueError("ci='nadeau-bengio' needs the CV predictions' fold (and repeat) columns")
    keys = ["repeat", "fold"] if "repeat" in part else ["fold"]
    aucs = []
    for _, f in part.groupby(keys):
        y = _binary_y(f["y_true"])
        if y.min() != y.max():
            s = f["score"].to_numpy(float)  # one case or control per fold is enough here
            aucs.append(_placements(s[y == 1], s[y == 0])[0])
    k = int(part["fold"].nunique())
    r = int(part["repeat"].nunique()) if "repeat" in part else 1
    return np.asarray(aucs, dtype=float), k, r


def cv_corrected_ci(fold_values, n_folds: int, *, centre: float | None = None,
                    alpha: float = 0.05) -> pd.Series:
    """Nadeau–Bengio corrected CI of a repeated-CV estimate from its per-fold values.

    The J = K × R fold estimates are correlated (their training sets overlap), so their plain
    variance understates the estimate's; Nadeau and Bengio's correction multiplies it by
    ``1/J + n_test/n_train`` (= ``1/J + 1/(K - 1)`` for K-fold CV): ``se = sqrt((1/J +
    1/(K-1)) s²)``, CI ``centre ± t_{J-1, 1-α/2} se`` (centre: the mean fold value unless given).

    Nadeau C, Bengio Y. Inference for the generalization error. Mach Learn 2003;52:239–281.

    Examples
    --------
    >>> r = cv_corrected_ci([0.70, 0.80, 0.75, 0.65, 0.72, 0.78, 0.74, 0.69, 0.81, 0.71], 5)
    >>> round(float(r.ci_low), 3), round(float(r.ci_high), 3)
    (0.667, 0.803)
    """
    v = np.asarray(fold_values, dtype=float)
    v = v[np.isfinite(v)]
    j = v.size
    if j < 2 or n_folds < 2:
        return pd.Series({"estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                          "n_estimates": j})
    centre = float(v.mean()) if centre is None else float(centre)
    se = float(np.sqrt((1 / j + 1 / (n_folds - 1)) * v.var(ddof=1)))
    t = float(sps.t.ppf(1 - alpha / 2, j - 1))
    return pd.Series({"estimate": centre, "se": se, "ci_low": max(0.0, centre - t * se),
                      "ci_high": min(1.0, centre + t * se), "n_estimates": j})


def _auc_row(y: np.ndarray, s: np.ndarray, ci: str, alpha: float, n_boot: int, g,
             part: pd.DataFrame | None = None) -> dict:
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    row = {"n": int(y.size), "n_pos": n_pos, "n_neg": n_neg, "auc": np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "ci_method": ci, "auc_p_value": np.nan, "note": ""}
    if n_pos == 0 or n_neg == 0:
        row["note"] = "one class only: AUC not computable"
        return row
    if ci == "nadeau-bengio":
        auc = _placements(*_split(y, s))[0]
        folds, k, _ = _fold_aucs(part)
        r = cv_corrected_ci(folds, k, centre=auc, alpha=alpha)
        row.update(auc=float(auc), ci_low=float(r.ci_low), ci_high=float(r.ci_high))
        if np.ptp(s) == 0:
            row["note"] = ("scores constant: the model cannot separate the classes "
                           "(AUC 0.5, no cut-off)")
        return row
    r = roc_auc_ci(y, s, method=ci, n_boot=n_boot, rng=g, alpha=alpha)
    row.update(auc=float(r.auc), auc_p_value=float(r.p_value))
    if np.ptp(s) == 0:
        row["note"] = "scores constant: the model cannot separate the classes (AUC 0.5, no cut-off)"
    elif r.se > 0 or ci == "bootstrap":
        row.update(ci_low=float(r.ci_low), ci_high=float(r.ci_high))
    else:  # AUC 0 or 1: every placement is 0 or 1, so DeLong's variance is 0
        row["note"] = (f"no {ci} CI: the scores separate the classes completely (AUC "
                       f"{r.auc:g}, variance estimate 0)")
    return row


def evaluate(
    data: pd.DataFrame,
    *,
    by=("model", "split"),
    ci: str = "delong",
    alpha: float = 0.05,
    n_boot: int = 2000,
    rng: RngLike = None,
    cutoff="youden",
    cutoff_split: str | None = "train_oof",
    proportion_ci: str = "wilson",
) -> pd.DataFrame:
    """Discrimination of every model on every split of a predictions table.

    Parameters
    ----------
    data : DataFrame
        The long predictions table (``model, split, patient_id, y_true, score, score_kind``;
        see :data:`PREDICTION_COLUMNS`), e.g. ``run.predictions_table``.
    by : str or list of str
        Grouping columns; one output row per group.
    ci : {"delong", "bootstrap", "nadeau-bengio"}
        AUC confidence-interval method, named in the ``ci_method`` column: ``delong`` and
        ``bootstrap`` (:func:`roc_auc_ci`) treat the scores as fixed, right for a held-out split;
        ``nadeau-bengio`` (:func:`cv_corrected_ci`) is for (repeated) CV predictions with
        ``fold``/``repeat`` columns: it adds the variance of refitting across folds, which a
        DeLong CI of pooled out-of-fold scores ignores (its AUC is the pooled one).
    cutoff : "youden", float, mapping model → float, or None
        The classification cut-off: ``"youden"`` maximises Youden's J on the rows of
        ``cutoff_split`` of the same model and applies it unchanged to every split; a number
        (or one per model) is used as given; ``None`` reports no threshold metrics.
    cutoff_split : str
        The split the Youden cut-off is chosen on (default ``"train_oof"``, the out-of-fold
        training predictions; a CV-only study uses ``"cv"``). A model without rows of that
        split gets no cut-off, and the ``note`` column says so.
    proportion_ci : {"wilson", "exact"}
        CI of accuracy, sensitivity, specificity, PPV and NPV.

    Returns
    -------
    DataFrame
        ``by`` columns, ``n, n_pos, n_neg, auc, ci_low, ci_high, ci_method, auc_p_value,
        cutoff, cutoff_split, cutoff_rule``, then ``<m>, <m>_count, <m>_ci_low, <m>_ci_high``
        for accuracy, sensitivity, specificity, ppv and npv, and ``note`` (why a value is
        missing: one class, constant scores, no cut-off split).

    Examples
    --------
    >>> g = np.random.default_rng(0); y = np.tile([0, 1], 20); s = y + g.normal(size=40)
    >>> pred = pd.DataFrame({"model": "m", "split": np.repeat(["train_oof", "test"], 20),
    ...                      "patient_id": range(40), "y_true": y, "score": s,
    ...                      "score_kind": "decision"})
    >>> evaluate(pred)[["split", "n", "cutoff_split"]].values.tolist()
    [['train_oof', 20, 'train_oof'], ['test', 20, 'train_oof']]
    """
    data = _check_predictions(data)
    g = _rng(rng)
    metrics = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
    cut_cache: dict = {}

    def model_cutoff(model) -> tuple[float, str]:
        if cutoff is None:
            return np.nan, "no cut-off requested"
        if isinstance(cutoff, Mapping):
            return float(cutoff[model]), ""
        if not isinstance(cutoff, str):
            return float(cutoff), ""
        if cutoff != "youden":
            raise ValueError(f"cutoff must be 'youden', a number, a mapping or None, "
                             f"got {cutoff!r}")
        if model not in cut_cache:
            rows = data[(data["model"] == model) & (data["split"] == cutoff_split)]
            if rows.empty:
                cut_cache[model] = (np.nan, f"no {cutoff_split!r} rows: no Youden cut-off")
            else:
                y = _binary_y(rows["y_true"])
                s = rows["score"].to_numpy(float)
                if np.ptp(s) == 0 or y.min() == y.max():
                    cut_cache[model] = (np.nan, f"no Youden cut-off: {cutoff_split!r} scores "
                                                "constant or one class")
                else:
                    cut_cache[model] = (youden_cutoff(y, s), "")
        return cut_cache[model]

    out = []
    for key, part in _groups_of(data, by):
        y = _binary_y(part["y_true"])
        s = part["score"].to_numpy(float)
        row = {**key, **_auc_row(y, s, ci, alpha, n_boot, g, part)}
        model = key.get("model", part["model"].iat[0])
        cut, why = model_cutoff(model)
        row.update(cutoff=cut, cutoff_split=cutoff_split if isinstance(cutoff, str) else None,
                   cutoff_rule=cutoff if isinstance(cutoff, str) else "given")
        if why:
            row["note"] = "; ".join(x for x in (row["note"], why) if x)
        for m in metrics:
            row.update({m: np.nan, f"{m}_count": "", f"{m}_ci_low": np.nan,
                        f"{m}_ci_high": np.nan})
        if np.isfinite(cut):
            bm = binary_metrics(y, s, cut, alpha=alpha, ci=proportion_ci)
            for m, v in bm.iterrows():
                row.update({m: v.estimate, f"{m}_count": v["count"], f"{m}_ci_low": v.ci_low,
                            f"{m}_ci_high": v.ci_high})
        out.append(row)
    return pd.DataFrame(out)


def _resolve_groups(groups, n: int) -> int:
    g = int(groups(n)) if callable(groups) else int(groups)
    if g < 2:
        raise ValueError(f"Hosmer–Lemeshow needs at least 2 groups, the rule gave {g} for n={n}")
    return g


def calibration(
    data: pd.DataFrame,
    *,
    by=("model", "split"),
    hl_groups=10,
    hl_dof="g-2",
    min_expected: float = 1.0,
    reduce_groups: bool = True,
) -> pd.DataFrame:
    """Calibration of every probability model on every split of a predictions table.

    Parameters
    ----------
    data : DataFrame
        The long predictions table; rows with ``score_kind == "decision"`` (SVM decision
        values, radscores) get no calibration (``note`` says so).
    hl_groups : int or callable
        Hosmer–Lemeshow groups, or a rule ``n -> groups`` (e.g. ``lambda n: min(10, n // 5)``).
    hl_dof : {"g-2", "g"} or mapping split → one of them
        Degrees of freedom: ``"g-2"`` for the data the model was fitted on, ``"g"`` for
        independent (held-out) data; a mapping chooses per split, e.g.
        ``{"train_oof": "g-2", "test": "g", "external": "g"}``.
    min_expected : float
        Smallest expected count of events or non-events a HL group may have (below it the χ²
        approximation fails: a near-certain group with 0.1 expected events turns one event
        into a statistic of 8).
    reduce_groups : bool
        When the rule's ``g`` groups leave an expected count below ``min_expected`` (a
        discriminating model on a small split: its extreme groups), use the largest number of
        groups below ``g`` whose expected counts all reach it (at least 3) and say so in
        ``note`` (Hosmer, Lemeshow &
        Sturdivant, *Applied Logistic Regression*, 3rd ed., §5.2.2: fewer groups when
        expected frequencies are small). ``False``, or no such ``g``: the HL statistic is
        reported as not computable.

    Returns
    -------
    DataFrame
        ``by`` columns, ``n, hl_statistic, hl_groups, hl_dof, hl_p, calibration_slope,
        calibration_intercept, brier, note``.

    Examples
    --------
    >>> g = np.random.default_rng(1); p = g.uniform(.05, .95, 200)
    >>> pred = pd.DataFrame({"model": "m", "split": "test", "patient_id": range(200),
    ...     "y_true": (g.uniform(size=200) < p).astype(int), "score": p,
    ...     "score_kind": "probability"})
    >>> calibration(pred, hl_groups=lambda n: min(10, n // 5), hl_dof="g")[["hl_groups", "hl_dof"]].values.tolist()
    [[10, 10]]
    """
    data = _check_predictions(data)
    out = []
    for key, part in _groups_of(data, by):
        row = {**key, "n": len(part), "hl_statistic": np.nan, "hl_groups": None, "hl_dof": None,
               "hl_p": np.nan, "calibration_slope": np.nan, "calibration_intercept": np.nan,
               "brier": np.nan, "note": ""}
        if (part["score_kind"] != "probability").any():
            row["note"] = "decision scores: calibration not applicable"
            out.append(row)
            continue
        y = _binary_y(part["y_true"])
        p = _prob(part["score"].to_numpy(float), len(y))
        row["brier"] = float(np.mean((p - y) ** 2))
        notes = []
        if y.min() == y.max():
            notes.append("one class only: calibration not computable")
        else:
            split = key.get("split", part["split"].iat[0])
            dof_rule = hl_dof.get(split, "g-2") if isinstance(hl_dof, Mapping) else hl_dof
            g_rule = _resolve_groups(hl_groups, len(y))
            g_min = 3  # fewer groups test little more than calibration-in-the-large
            candidates = list(range(g_rule, g_min - 1, -1)) if reduce_groups and g_rule >= g_min \
                else [g_rule]
            for g in candidates:
                grp = _quantile_groups(p, g)
                e1 = np.array([p[grp == k].sum() for k in np.unique(grp)])
                e0 = np.array([(grp == k).sum() for k in np.unique(grp)]) - e1
                small = min(e1.min(), e0.min()) < min_expected
                if not small:
                    break
            if small:  # the rule's grouping is reported (its statistic is not)
                g = g_rule
            with np.errstate(divide="ignore", invalid="ignore"):  # empty expectations: small
                hl = hosmer_lemeshow(y, p, groups=g, dof=dof_rule)
            row.update(hl_groups=int(hl.groups), hl_dof=int(hl.dof))
            if hl.dof <= 0:
                notes.append(f"HL not computable: {int(hl.groups)} group(s) formed")
            elif small:
                fewest = f" (also with {g_min}-{g_rule} groups)" if reduce_groups and \
                    g_rule > g_min else ""
                notes.append(f"HL not computable: an expected count below {min_expected:g} "
                             f"with {int(hl.groups)} groups of n={len(y)}{fewest}")
            else:
                row.update(hl_statistic=float(hl.statistic), hl_p=float(hl.p_value))
                if g < g_rule:
                    notes.append(f"HL with {g} quantile groups instead of {g_rule}: more "
                                 f"groups leave an expected count below {min_expected:g}")
            if np.ptp(p) == 0:
                notes.append("probabilities constant: no calibration slope")
            else:
                try:
                    cs = calibration_slope_intercept(y, p)
                    if cs.separated:  # no maximum-likelihood slope exists
                        notes.append("calibration slope not estimable: the probabilities "
                                     "separate the outcome perfectly")
                        if np.isfinite(cs.intercept) and abs(cs.intercept) < 50:
                            row.update(calibration_intercept=float(cs.intercept))
                    # near-separated fits (probabilities at 0/1 on the wrong side) give
                    # logits of hundreds or more: not a calibration estimate
                    elif (np.isfinite(cs.slope) and np.isfinite(cs.intercept)
                            and abs(cs.slope) < 1e3 and abs(cs.intercept) < 50):
                        row.update(calibration_slope=float(cs.slope),
                                   calibration_intercept=float(cs.intercept))
                    else:
                        notes.append("calibration slope not computable (separation)")
                except Exception as exc:  # noqa: BLE001 - perfect separation etc.
                    notes.append(f"calibration slope not computable ({type(exc).__name__})")
        row["note"] = "; ".join(notes)
        out.append(row)
    return pd.DataFrame(out)


def calibration_by_class(data: pd.DataFrame, *, reference: str = "train_oof",
                         splits: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean predicted probability per model, split and true class, beside the same class on
    ``reference`` (default the out-of-fold training predictions, which a probability link fitted
    out of fold is calibrated on).

    Where a split's calibration fails, this says where: the patients of one class scored higher
    or lower than the training patients of that class were out of fold (that split's patients
    differ in what the model reads), both classes moved together (the probabilities are off for
    everyone), or the classes moved towards each other (the model separates them less).
    :func:`class_shift_sentence` writes it for a report.

    Returns
    -------
    DataFrame
        ``model, split, y_true, n, mean_probability, reference_mean, difference, p_value``
        (probability models only; ``splits`` default: every split but ``reference`` and
        ``train``; ``p_value``: Welch's t-test of the class's probabilities on the split
        against the reference's, NaN with fewer than 2 on either side).

    Examples
    --------
    >>> pred = pd.DataFrame({"model": "m", "split": ["train_oof"] * 4 + ["test"] * 4,
    ...     "patient_id": range(8), "y_true": [0, 0, 1, 1] * 2,
    ...     "score": [.2, .2, .8, .8, .5, .5, .8, .8], "score_kind": "probability"})
    >>> calibration_by_class(pred)[["y_true", "mean_probability", "difference"]].values.tolist()
    [[0.0, 0.5, 0.3], [1.0, 0.8, 0.0]]
    """
    data = _check_predictions(data)
    data = data[data["score_kind"] == "probability"]
    rows = []
    empty = pd.Series(dtype=float)
    for model, d in data.groupby("model", sort=False):
        ref = {cls: g["score"] for cls, g in d[d["split"] == reference].groupby("y_true")}
        for split, part in d.groupby("split", sort=False):
            if (splits is None and split in (reference, "train")) or (
                    splits is not None and split not in splits):
                continue
            for cls, g in part.groupby("y_true"):
                own, other = g["score"], ref.get(cls, empty)
                m, r = float(own.mean()), float(other.mean()) if len(other) else np.nan
                pv = np.nan
                if len(own) > 1 and len(other) > 1:
                    if own.var() + other.var() > 0:
                        pv = float(sps.ttest_ind(own, other, equal_var=False).pvalue)
                    else:  # both constant: they differ or they do not
                        pv = 0.0 if m != r else 1.0
                rows.append({"model": model, "split": split, "y_true": cls, "n": len(own),
                             "mean_probability": m, "reference_mean": r,
                             "difference": m - r, "p_value": pv})
    return pd.DataFrame(rows, columns=["model", "split", "y_true", "n", "mean_probability",
                                       "reference_mean", "difference", "p_value"])


def _p_text(p: float) -> str:
    return "not computable" if not np.isfinite(p) else f"{p:.2g}" if p >= 0.001 else "< 0.001"


def class_shift_sentence(table: pd.DataFrame, model: str, split: str = "test", *,
                         classes: tuple[str, str] = ("without the outcome", "with the outcome"),
                         split_name: str = "", threshold: float = 0.1, alpha: float = 0.05
                         ) -> str:
    """One sentence for a report from :func:`calibration_by_class`: each class's mean predicted
    probability on ``split`` against the same class out of fold in training, and which pattern
    it is. A class counts as moved when its mean differs by at least ``threshold`` and Welch's
    test says the difference is beyond sampling noise (``p_value`` < ``alpha``); a large
    difference within the noise of a few patients is said as such.

    Examples
    --------
    >>> t = pd.DataFrame({"model": "m", "split": "test", "y_true": [0, 1], "n": [22, 26],
    ...     "mean_probability": [.44, .80], "reference_mean": [.24, .79], "difference": [.2, .01],
    ...     "p_value": [.001, .9]})
    >>> text = class_shift_sentence(t, "m")
    >>> text.split(";")[0].split(" against ")
    ['m, test: mean predicted probability 0.44 for the 22 patients without the outcome', \
'0.24 for the training patients without the outcome out of fold (+0.20, Welch p 0.001)']
    >>> "only the patients without the outcome moved" in text
    True
    """
    t = table[(table["model"] == model) & (table["split"] == split)].set_index("y_true")
    name = split_name or split
    if not {0, 1} <= set(t.index):
        return f"{model}: the {name} patients do not hold both classes; no comparison by class."
    if t["reference_mean"].isna().any():
        return (f"{model}: no out-of-fold training probabilities of both classes to compare the "
                f"{name} patients with; no comparison by class.")
    parts = [f"{t.loc[c, 'mean_probability']:.2f} for the {int(t.loc[c, 'n'])} patients "
             f"{classes[c]} against {t.loc[c, 'reference_mean']:.2f} for the training patients "
             f"{classes[c]} out of fold ({t.loc[c, 'difference']:+.2f}, Welch p "
             f"{_p_text(t.loc[c, 'p_value'])})" for c in (0, 1)]
    d0, d1 = float(t.loc[0, "difference"]), float(t.loc[1, "difference"])
    big0, big1 = abs(d0) >= threshold, abs(d1) >= threshold
    moved0 = big0 and float(t.loc[0, "p_value"]) < alpha  # NaN p: not shown to have moved
    moved1 = big1 and float(t.loc[1, "p_value"]) < alpha
    if not (big0 or big1):
        verdict = f"neither class moved by {threshold:g} or more"
    elif not (moved0 or moved1):
        verdict = (f"no class moved beyond the sampling noise of this many patients (Welch "
                   f"p >= {alpha:g} for each class that moved by {threshold:g} or more)")
    elif moved0 != moved1:
        who = classes[0] if moved0 else classes[1]
        verdict = (f"only the patients {who} moved: on this split they score "
                   f"{'higher' if (d0 if moved0 else d1) > 0 else 'lower'} than the training "
                   f"patients {who} did out of fold, so the split's patients of that class differ "
                   "in what the model reads (case mix, or acquisition at another centre), "
                   "rather than the probabilities being off for everyone")
    elif np.sign(d0) == np.sign(d1):
        verdict = ("both classes moved the same way: the probabilities are off for everyone "
                   "on this split (calibration-in-the-large)")
    else:
        verdict = ("the classes moved towards each other: the model separates them less on "
                   "this split than out of fold" if d0 > 0 > d1 else
                   "the classes moved apart: the model separates them more on this split")
    return (f"{model}, {name}: mean predicted probability " + "; ".join(parts)
            + f": {verdict}.")


def class_shift_text(table: pd.DataFrame, models: Sequence[str], *,
                     classes: tuple[str, str] = ("without the outcome", "with the outcome"),
                     split_names: Mapping[str, str] | None = None, threshold: float = 0.1,
                     alpha: float = 0.05) -> str:
    """:func:`class_shift_sentence` for each of ``models`` on each split of ``table`` (a
    :func:`calibration_by_class` table), one paragraph each, for a report's Markdown;
    ``split_names`` renames splits in the text (e.g. ``{"test": "validation"}``). Says so when
    the table holds none of ``models``.

    Examples
    --------
    >>> class_shift_text(pd.DataFrame(columns=["model", "split"]), ["m"])
    'No held-out probabilities of m beside out-of-fold training ones: no calibration comparison by class.'
    """
    names = dict(split_names or {})
    shown = [m for m in models if m in set(table["model"])]
    if not shown:
        return (f"No held-out probabilities of {', '.join(models)} beside out-of-fold training "
                "ones: no calibration comparison by class.")
    return "\n\n".join(
        class_shift_sentence(table, m, s, classes=classes, split_name=names.get(s, s),
                             threshold=threshold, alpha=alpha)
        for m in shown for s in table.loc[table["model"] == m, "split"].unique())


def delong_pairs(
    data: pd.DataFrame, *, split: str, pairs: Sequence[tuple[str, str]] | None = None,
    models: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Paired DeLong tests between models on one split of a predictions table.

    Patients are matched on ``patient_id`` (rows present for both models). ``pairs`` lists the
    comparisons (default: every pair of ``models``, default every model on that split).

    Returns
    -------
    DataFrame
        ``model_a, model_b, split, n, auc_a, auc_b, z, p_value``.

    Examples
    --------
    >>> g = np.random.default_rng(0); y = np.tile([0, 1], 30)
    >>> pred = pd.concat([pd.DataFrame({"model": m, "split": "test", "patient_id": range(60),
    ...     "y_true": y, "score": y * k + g.normal(size=60), "score_kind": "decision"})
    ...     for m, k in (("a", 2.0), ("b", 0.5))])
    >>> delong_pairs(pred, split="test")[["model_a", "model_b", "n"]].values.tolist()
    [['a', 'b', 60]]
    """
    data = _check_predictions(data)
    part = data[data["split"] == split]
    if part.empty:
        raise ValueError(f"no rows of split {split!r} in the predictions table")
    if "repeat" in part and part["repeat"].nunique() > 1:
        raise ValueError(f"split {split!r} holds several CV repeats: select one repeat (or "
                         "average the scores per patient) before a paired DeLong test")
    names = list(models) if models is not None else list(dict.fromkeys(part["model"]))
    todo = list(pairs) if pairs is not None else [
        (a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    wide = part.pivot_table(index="patient_id", columns="model", values="score",
                            aggfunc="first")
    truth = part.groupby("patient_id")["y_true"].first()
    rows = []
    for a, b in todo:
        for m in (a, b):
            if m not in wide:
                raise ValueError(f"model {m!r} has no rows on split {split!r}")
        both = wide[[a, b]].dropna()
        y = truth.loc[both.index]
        r = delong_test(y, both[a], both[b])
        rows.append({"model_a": a, "model_b": b, "split": split, "n": len(both),
                     "auc_a": float(r.auc_a), "auc_b": float(r.auc_b), "z": float(r.z),
                     "p_value": float(r.p_value)})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "split", "n", "auc_a", "auc_b", "z",
                                       "p_value"])


def paper_table(*perfs: pd.DataFrame) -> pd.DataFrame:
    """:func:`evaluate` table(s) shaped like a paper's performance table: ``Model`` (model and
    split), ``AUC``, ``95% CI``, accuracy, sensitivity, specificity, PPV, NPV, ``P`` (AUC vs
    0.5) and ``Note``; rows ordered train, train_oof, test, external, cv, final."""
    perf = pd.concat(perfs, ignore_index=True)
    name = {"train": "training", "train_oof": "training (out of fold)", "test": "testing"}
    out = pd.DataFrame({
        "Model": perf["model"] + "-" + perf["split"].map(name).fillna(perf["split"]),
        "AUC": perf["auc"].round(3),
        "95% CI": [f"{lo:.3f}-{hi:.3f}" if np.isfinite(lo) else "n/a"
                   for lo, hi in zip(perf.ci_low.astype(float), perf.ci_high.astype(float))],
        **{c.upper() if len(c) == 3 else c.capitalize(): perf[c].astype(float).round(3)
           for c in ("accuracy", "sensitivity", "specificity", "ppv", "npv")},
        "P": [("n/a" if not np.isfinite(p) else "<0.001" if p < 0.001 else f"{p:.3f}")
              for p in perf["auc_p_value"].astype(float)],
        "Note": perf["note"]})
    order = np.argsort(perf["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy(),
                       kind="stable")
    return out.iloc[order].reset_index(drop=True)


def delong_square(pairs: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`delong_pairs` as a square p-value matrix (NaN diagonal), the input of
    :func:`vcfnb.plots.plot_delong_matrix`."""
    names = list(dict.fromkeys([*pairs["model_a"], *pairs["model_b"]]))
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for r in pairs.itertuples():
        m.loc[r.model_a, r.model_b] = m.loc[r.model_b, r.model_a] = r.p_value
    return m


def calibration_curves(data: pd.DataFrame, cal: pd.DataFrame | None = None, *, split: str,
                       n_bins: int = 10) -> pd.DataFrame:
    """Binned :func:`calibration_curve` of every probability model on ``split`` of a predictions
    table (long: ``model`` + the curve columns), each model labelled with its Hosmer–Lemeshow p
    from ``cal`` (a :func:`calibration` table) when given."""
    data = _check_predictions(data)
    hl = (cal[cal["split"] == split].set_index("model")["hl_p"] if cal is not None
          else pd.Series(dtype=float))
    parts = []
    part = data[(data["split"] == split) & (data["score_kind"] == "probability")]
    for m, g in part.groupby("model", sort=False):
        p = float(hl.get(m, np.nan))
        label = (m if cal is None else f"{m} (HL p={p:.3f})" if np.isfinite(p)
                 else f"{m} (HL not computable)")
        parts.append(calibration_curve(g["y_true"], g["score"], n_bins=n_bins)
                     .assign(model=label))
    return pd.concat(parts, ignore_index=True)


__all__ += ["paper_table", "delong_square", "calibration_curves"]


def cv_delong_pairs(
    data: pd.DataFrame, *, split: str = "cv", pairs: Sequence[tuple[str, str]] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Model comparisons on (repeated) CV predictions with the Nadeau–Bengio corrected
    resampled t-test on the per-fold AUC differences (folds matched on ``repeat, fold``).

    A DeLong test of pooled out-of-fold scores treats them as one fixed set of predictions and
    ignores that every fold refits the models; this test does not.

    Returns
    -------
    DataFrame
        ``model_a, model_b, split, n_folds, auc_diff, se, t, dof, p_value, ci_low, ci_high,
        method`` (``nadeau-bengio``).
    """
    data = _check_predictions(data)
    part = data[data["split"] == split]
    if "fold" not in part:
        raise ValueError("cv_delong_pairs needs fold (and repeat) columns")
    names = list(dict.fromkeys(part["model"]))
    todo = list(pairs) if pairs is not None else [
        (a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    keys = ["repeat", "fold"] if "repeat" in part else ["fold"]
    per = {}
    for m in {x for pair in todo for x in pair}:
        rows = {}
        for key, f in part[part["model"] == m].groupby(keys):
            y = _binary_y(f["y_true"])
            if y.min() != y.max():
                s = f["score"].to_numpy(float)  # a fold may hold a single case
                rows[key] = _placements(s[y == 1], s[y == 0])[0]
        per[m] = pd.Series(rows, dtype=float)
    k = int(part["fold"].nunique())
    out = []
    for a, b in todo:
        d = (per[a] - per[b]).dropna().to_numpy()
        j = d.size
        if j < 2:
            out.append({"model_a": a, "model_b": b, "split": split, "n_folds": j,
                        "auc_diff": np.nan, "se": np.nan, "t": np.nan, "dof": j - 1,
                        "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                        "method": "nadeau-bengio"})
            continue
        se = float(np.sqrt((1 / j + 1 / (k - 1)) * d.var(ddof=1)))
        t = float(d.mean() / se) if se > 0 else np.nan
        p = float(2 * sps.t.sf(abs(t), j - 1)) if se > 0 else np.nan
        q = float(sps.t.ppf(1 - alpha / 2, j - 1))
        out.append({"model_a": a, "model_b": b, "split": split, "n_folds": j,
                    "auc_diff": float(d.mean()), "se": se, "t": t, "dof": j - 1, "p_value": p,
                    "ci_low": float(d.mean() - q * se), "ci_high": float(d.mean() + q * se),
                    "method": "nadeau-bengio"})
    return pd.DataFrame(out)
