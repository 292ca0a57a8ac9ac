"""Leakage-free feature selection: scikit-learn transformers fitted on training rows only.

Every selector here is a ``BaseEstimator``/``TransformerMixin`` whose ``__init__`` only stores
parameters and whose learned state ends in ``_``, so the whole chain
(scaling → filters → mRMR/LASSO/RFE/SFS → classifier) is one ``Pipeline`` that is fitted inside
each cross-validation fold. Put the same pipeline in :func:`vcfnb.models.cv_predict` or
:func:`vcfnb.models.permutation_test` and selection is repeated per fold, which is what makes
leakage impossible rather than avoided by care (see ``tests/test_leakage.py``).

All selectors accept a ``DataFrame`` or an array. Given a ``DataFrame`` they return a
``DataFrame`` restricted to the selected columns (same index), and
``get_feature_names_out()`` names them; ``set_output(transform="pandas")`` works as in
scikit-learn. Labels must be binary; the larger of the two sorted labels is the positive class.

Scalers and oversampling are the libraries' own, re-exported here:

- :class:`StandardScaler` (z-score) and :class:`MaxAbsScaler` from scikit-learn;
- :class:`RandomOverSampler` from imbalanced-learn. A sampler only acts at *fit* time, so it must
  sit in an :class:`imblearn.pipeline.Pipeline` (also re-exported as :class:`Pipeline`), which
  resamples the training rows of each fit and passes test rows through untouched.
  :func:`vcfnb.models.make_radiomics_pipeline` always builds that pipeline class.

References
----------
- Tibshirani R. Regression shrinkage and selection via the lasso. J R Stat Soc B 1996.
- Friedman J, Hastie T, Tibshirani R. Regularization paths for generalized linear models via
  coordinate descent. J Stat Softw 2010 (glmnet: the lambda scale and the 1-SE rule).
- Peng H, Long F, Ding C. Feature selection based on mutual information: criteria of
  max-dependency, max-relevance, and min-redundancy. IEEE TPAMI 2005 (mRMR).
- Guyon I, Weston J, Barnhill S, Vapnik V. Gene selection for cancer classification using
  support vector machines. Mach Learn 2002 (SVM-RFE).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from imblearn.over_sampling import RandomOverSampler
from imblearn.pipeline import Pipeline
from scipy import special, stats
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import RFECV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.preprocessing import MaxAbsScaler, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = [
    "StandardScaler",
    "MaxAbsScaler",
    "RandomOverSampler",
    "Pipeline",
    "UnivariateFilter",
    "shapiro_pvalues",
    "CorrelationFilter",
    "MRMRSelector",
    "LassoSelector",
    "lasso_stopping_rule",
    "RFESelector",
    "SFSSelector",
    "RenameColumns",
    "lambda_to_C",
    "C_to_lambda",
]

from vcfnb.parallel import pmap, resolve_n_jobs  # noqa: E402
from vcfnb.rng import RNGLike, random_state  # noqa: E402,F401 - RNGLike is re-exported
_SK_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
_random_state = random_state  # an int passes through (rng=seed gives random_state=seed)


def _binary_labels(y: Any) -> np.ndarray:
    """Labels as a 0/1 int array (the larger sorted label is 1); error unless exactly 2 classes."""
    y = np.asarray(y).ravel()
    classes = np.unique(y)
    if classes.size != 2:
        raise ValueError(
            f"binary labels are required, got {classes.size} class(es): {classes[:5].tolist()}"
        )
    return (y == classes[1]).astype(int)


def _auc_from_scores(y01: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann–Whitney rank formula (ties count 1/2)."""
    n1 = int(y01.sum())
    n0 = y01.size - n1
    ranks = stats.rankdata(score)
    return float((ranks[y01 == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _column_auc(X: np.ndarray, y01: np.ndarray) -> np.ndarray:
    """Univariate AUC of every column of ``X`` (vectorised Mann–Whitney)."""
    n1 = int(y01.sum())
    n0 = y01.size - n1
    ranks = stats.rankdata(X, axis=0)
    return (ranks[y01 == 1].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _l1_logistic(C: float, solver: str, tol: float, max_iter: int, random_state: int | None,
                 warm_start: bool = False) -> LogisticRegression:
    """An L1 logistic regression that works across scikit-learn versions."""
    kw: dict[str, Any] = dict(C=C, solver=solver, tol=tol, max_iter=max_iter,
                              random_state=random_state, warm_start=warm_start)
    if solver == "liblinear":
        # liblinear penalises the intercept; a large intercept_scaling makes that penalty negligible
        kw["intercept_scaling"] = 1000.0
    if _SK_VERSION >= (1, 8):
        return LogisticRegression(l1_ratio=1.0, **kw)
    return LogisticRegression(penalty="l1", **kw)  # pragma: no cover - older scikit-learn


def lambda_to_C(lam: float, n_samples: int) -> float:
    """scikit-learn's ``C`` equivalent to glmnet's ``lambda``: ``C = 1 / (lambda · n)``.

    glmnet minimises ``-loglik/n + lambda·||b||_1``; scikit-learn's L1 logistic regression
    minimises ``C·(-loglik) + ||b||_1``. Dividing the latter by ``C·n`` gives the former with
    ``lambda = 1/(C·n)``. The intercept is not penalised in either (solver ``saga``).

    Examples
    --------
    >>> lambda_to_C(0.13, 112)  # doctest: +ELLIPSIS
    0.0686...
    """
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    return 1.0 / (lam * n_samples)


def C_to_lambda(C: float, n_samples: int) -> float:
    """glmnet's ``lambda`` equivalent to scikit-learn's ``C``: ``lambda = 1 / (C · n)``."""
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    return 1.0 / (C * n_samples)


def _check_finite(values: np.ndarray, who: str) -> None:
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise ValueError(f"{who}: input X contains NaN or infinity")


class _ColumnSelector(TransformerMixin, BaseEstimator):
    """Base class: validation, ``support_``, DataFrame-preserving ``transform``, feature names."""

    def _validate_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        if _sk_validate_data is not None:
            Xa = _sk_validate_data(self, X, reset=True, dtype=np.float64)
        else:  # pragma: no cover - older scikit-learn
            Xa = self._validate_data(X, reset=True, dtype=np.float64)
        y01 = _binary_labels(y)
        if y01.size != Xa.shape[0]:
            raise ValueError(f"X has {Xa.shape[0]} rows but y has {y01.size} labels")
        return Xa, y01

    def _names_in(self) -> np.ndarray:
        return _check_feature_names_in(self, None)

    def get_support(self, indices: bool = False) -> np.ndarray:
        """Boolean mask (or integer indices) of the selected input features."""
        check_is_fitted(self, "support_")
        return np.flatnonzero(self.support_) if indices else self.support_.copy()

    def _output_indices(self) -> np.ndarray:
        """Input column indices in output order (input order unless a subclass says otherwise)."""
        return np.flatnonzero(self.support_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the selected features, in output order (input order unless stated)."""
        check_is_fitted(self, "support_")
        names = _check_feature_names_in(self, input_features)
        return np.asarray(names, dtype=object)[self._output_indices()]

    @property
    def selected_features_(self) -> list[str]:
        """The selected feature names as a list (output order: input order unless stated)."""
        return [str(n) for n in self.get_feature_names_out()]

    def transform(self, X: Any) -> Any:
        """Keep the selected columns; a DataFrame stays a DataFrame (selected by name)."""
        check_is_fitted(self, "support_")
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            cols = list(np.asarray(self.feature_names_in_, dtype=object)[self._output_indices()])
            missing = [c for c in cols if c not in X.columns]
            if missing:
                raise ValueError(
                    f"{type(self).__name__}: columns seen at fit are missing: {missing[:10]}"
                )
            out = X.loc[:, cols]
            _check_finite(out.to_numpy(), type(self).__name__)
            return out
        Xa = np.asarray(X.to_numpy() if isinstance(X, pd.DataFrame) else X)
        if Xa.ndim != 2 or Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{type(self).__name__}: X has {Xa.shape[-1]} features, "
                f"but it was fitted with {self.n_features_in_}"
            )
        out = Xa[:, self._output_indices()]
        _check_finite(out, type(self).__name__)
        return out

    def __sklearn_tags__(self):  # pragma: no cover - only used by scikit-learn's checks
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


# --------------------------------------------------------------------------------------------
# univariate filter
# --------------------------------------------------------------------------------------------
def shapiro_pvalues(A: Any) -> np.ndarray:
    """Shapiro–Wilk p-value of every column of ``A`` (rows = observations); 0.0 for a constant
    column.

    Identical to ``scipy.stats.shapiro(A[:, j]).pvalue`` column by column, but sorts all columns
    at once and calls scipy's compiled SWILK routine directly: ~20× faster on wide tables,
    where the per-call overhead of ``scipy.stats.shapiro`` dominates (thousands of features in
    every fold of every permutation).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import stats
    >>> A = np.random.default_rng(0).gamma(2.0, size=(40, 3))
    >>> bool(np.array_equal(shapiro_pvalues(A), [stats.shapiro(A[:, j]).pvalue for j in range(3)]))
    True
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 3:
        raise ValueError("shapiro_pvalues needs a 2-D array with at least 3 rows")
    n, p = A.shape
    constant = np.ptp(A, axis=0) == 0
    try:
        from scipy.stats._ansari_swilk_statistics import swilk
    except ImportError:  # pragma: no cover - scipy moved its private routine: slow, same values
        return np.array([0.0 if constant[j] else float(stats.shapiro(A[:, j]).pvalue)
                         for j in range(p)])
    # as scipy.stats.shapiro: sort, then subtract the value at position n//2 of the *unsorted*
    # data (scipy gh-15777), then SWILK
    Y = np.sort(A, axis=0) - A[n // 2][None, :]
    out = np.zeros(p)
    for j in np.flatnonzero(~constant):
        out[j] = swilk(np.ascontiguousarray(Y[:, j]), np.zeros(n // 2), 0)[1]
    return out


class UnivariateFilter(_ColumnSelector):
    """Keep features whose two-group test has p < ``alpha`` (t-test, Mann–Whitney, or by normality).

    Parameters
    ----------
    test : {"ttest", "mannwhitney", "auto"}
        ``"ttest"``: two-sample t-test (Student's unless ``equal_var=False``);
        ``"mannwhitney"``: two-sided Mann–Whitney U; ``"auto"``: per feature, Shapiro–Wilk in each
        group; the t-test when both groups look normal (p > ``normality_alpha``), otherwise
        Mann–Whitney — the rule seed 001 describes.
    alpha : float
        Keep features with p < alpha.
    min_features : int
        If fewer features pass, keep the ``min_features`` with the smallest p and warn, so that a
        pipeline never runs out of features (on pure noise this is the usual outcome).
    normality_alpha : float
        Significance level of the Shapiro–Wilk tests for ``test="auto"``.
    equal_var : bool
        Passed to :func:`scipy.stats.ttest_ind` (``False`` = Welch).

    Attributes
    ----------
    pvalues_ : ndarray of shape (n_features,)
        p-value per input feature (constant features get 1.0).
    results_ : DataFrame
        Columns ``feature, test, statistic, p_value, selected``; ``statistic`` is t or U of
        the positive class against the other (t > 0 when the feature is higher in class 1).
    support_ : ndarray of bool
        Selected features.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(60, 5)), columns=list("abcde"))
    >>> y = np.r_[np.zeros(30), np.ones(30)]
    >>> X["a"] += 1.5 * y
    >>> UnivariateFilter(test="ttest", alpha=0.01).fit(X, y).get_feature_names_out().tolist()
    ['a']
    """

    def __init__(self, test: str = "auto", alpha: float = 0.05, min_features: int = 1,
                 normality_alpha: float = 0.05, equal_var: bool = True) -> None:
        self.test = test
        self.alpha = alpha
        self.min_features = min_features
        self.normality_alpha = normality_alpha
        self.equal_var = equal_var

    def fit(self, X: Any, y: Any) -> "UnivariateFilter":
        """Test every feature on the training rows ``X, y``."""
        if self.test not in ("ttest", "mannwhitney", "auto"):
            raise ValueError(f"test must be 'ttest', 'mannwhitney' or 'auto', got {self.test!r}")
        Xa, y01 = self._validate_fit(X, y)
        a, b = Xa[y01 == 0], Xa[y01 == 1]
        p = Xa.shape[1]
        constant = np.ptp(Xa, axis=0) == 0
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # positive class first: t > 0 and U/(n1·n0) > 0.5 when the feature is higher in class 1
            t_stat, t_p = stats.ttest_ind(b, a, axis=0, equal_var=self.equal_var)
            u_stat, u_p = stats.mannwhitneyu(b, a, axis=0, alternative="two-sided")
            if self.test == "auto":
                normal = np.ones(p, dtype=bool)
                for group in (a, b):
                    if group.shape[0] < 3:
                        raise ValueError(
                            "test='auto' needs at least 3 rows per class for Shapiro–Wilk")
                    sw_p = shapiro_pvalues(group)
                    normal &= sw_p > self.normality_alpha
                use_t = normal
            else:
                use_t = np.full(p, self.test == "ttest")
        stat = np.where(use_t, t_stat, u_stat)
        pval = np.where(use_t, t_p, u_p)
        pval = np.where(constant | ~np.isfinite(pval), 1.0, pval)
        support = pval < self.alpha
        if support.sum() < self.min_features:
            k = min(int(self.min_features), p)
            order = np.lexsort((np.arange(p), pval))[:k]
            support = np.zeros(p, dtype=bool)
            support[order] = True
            warnings.warn(
                f"UnivariateFilter: {int((pval < self.alpha).sum())} feature(s) with "
                f"p < {self.alpha}; "
                f"keeping the {k} with the smallest p instead",
                UserWarning, stacklevel=2,
            )
        self.pvalues_ = pval
        self.support_ = support
        self.results_ = pd.DataFrame({
            "feature": self._names_in(),
            "test": np.where(use_t, "ttest", "mannwhitney"),
            "statistic": stat,
            "p_value": pval,
            "selected": support,
        })
        return self


# --------------------------------------------------------------------------------------------
# correlation filter
# --------------------------------------------------------------------------------------------
class CorrelationFilter(_ColumnSelector):
    """Drop one feature of every pair with |Pearson r| > ``threshold``, keeping the more relevant.

    Features are visited from the most to the least label-relevant (ties: input order); a feature
    is kept unless its |r| with an already kept feature exceeds ``threshold``. So of each
    correlated pair the more relevant survives, and the result is deterministic.

    Parameters
    ----------
    threshold : float
        |r| above which two features are redundant (seed 000: 0.99, seed 001: 0.9).
    relevance : {"auc", "t"}
        Label relevance: distance of the univariate AUC from 0.5, or |t| of a two-sample t-test.

    Attributes
    ----------
    relevance_ : ndarray
        Relevance of each input feature.
    dropped_ : DataFrame
        Columns ``feature, correlated_with, r``: each dropped feature, the kept feature it was
        most correlated with, and that correlation.
    support_ : ndarray of bool

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> y = np.r_[np.zeros(30), np.ones(30)]
    >>> a = y + rng.normal(size=60)
    >>> X = pd.DataFrame({"a": a, "a_noisy": a + 0.3 * rng.normal(size=60),
    ...                   "b": rng.normal(size=60)})
    >>> sorted(CorrelationFilter(threshold=0.9).fit(X, y).get_feature_names_out())
    ['a', 'b']
    """

    def __init__(self, threshold: float = 0.9, relevance: str = "auc") -> None:
        self.threshold = threshold
        self.relevance = relevance

    def fit(self, X: Any, y: Any) -> "CorrelationFilter":
        """Compute correlations and relevance on the training rows."""
        if self.relevance not in ("auc", "t"):
            raise ValueError(f"relevance must be 'auc' or 't', got {self.relevance!r}")
        Xa, y01 = self._validate_fit(X, y)
        p = Xa.shape[1]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = np.corrcoef(Xa, rowvar=False) if p > 1 else np.ones((1, 1))
            if self.relevance == "auc":
                rel = np.abs(_column_auc(Xa, y01) - 0.5)
            else:
                rel = np.abs(stats.ttest_ind(Xa[y01 == 0], Xa[y01 == 1], axis=0).statistic)
        r = np.nan_to_num(np.atleast_2d(r), nan=0.0)
        rel = np.nan_to_num(rel, nan=0.0)
        order = np.lexsort((np.arange(p), -rel))
        kept: list[int] = []
        dropped = []
        names = self._names_in()
        for j in order:
            if kept:
                rk = np.abs(r[j, kept])
                m = int(np.argmax(rk))
                if rk[m] > self.threshold:
                    dropped.append((names[j], names[kept[m]], float(r[j, kept[m]])))
                    continue
            kept.append(int(j))
        support = np.zeros(p, dtype=bool)
        support[kept] = True
        self.relevance_ = rel
        self.support_ = support
        self.dropped_ = pd.DataFrame(dropped, columns=["feature", "correlated_with", "r"])
        return self


# --------------------------------------------------------------------------------------------
# mRMR
# --------------------------------------------------------------------------------------------
_MRMR_FLOOR = 0.001  # mrmr-selection's floor for |correlation| (``mrmr.main.FLOOR``)


def _mrmr_fcq(X: np.ndarray, y: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """mRMR with F-statistic relevance and mean |Pearson r| redundancy ("FCQ"), vectorised.

    The same algorithm, constants and tie-breaking as ``mrmr_selection.mrmr_classif`` with its
    defaults (relevance ``"f"``, redundancy ``"c"``, denominator ``"mean"``): candidates are the
    columns with a positive F statistic; each step picks the first column (input order) with the
    largest ``relevance / mean(|r| with the chosen ones)``, ``|r|`` floored at 0.001 and a mean of
    exactly 1 counted as infinite redundancy. mrmr-selection does this with pandas ``apply``
    loops, O(k × p) Python calls (tens of seconds for 1000 features under pandas 3); here each
    step is one matrix-vector product. ``X`` must be finite.

    Returns
    -------
    chosen : list of int
        Column indices of ``X`` in mRMR order (at most ``k``).
    relevance : ndarray
        F statistic of every column (NaN → 0).
    """
    from sklearn.feature_selection import f_classif

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns: F = 0/0 ...
        warnings.simplefilter("ignore", UserWarning)  # ... and "Features [...] are constant"
        rel_all = np.nan_to_num(f_classif(X, y)[0], nan=0.0)
    cand = np.flatnonzero(rel_all > 0)
    A, rel = X[:, cand], rel_all[cand]
    Z = A - A.mean(axis=0)
    norm = np.sqrt((Z ** 2).sum(axis=0))
    red_sum = np.zeros(len(cand))
    free = np.ones(len(cand), bool)
    chosen: list[int] = []
    for i in range(min(int(k), len(cand))):
        if i == 0:
            score = rel.copy()
        else:
            last = chosen[-1]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = (Z.T @ Z[:, last]) / (norm * norm[last])
            r = np.clip(np.abs(np.nan_to_num(r, nan=_MRMR_FLOOR)), _MRMR_FLOOR, None)
            red_sum += r
            den = red_sum / i
            den = np.where(den == 1.0, np.inf, den)
            score = rel / den
        score = np.where(free, score, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        free[best] = False
    return [int(cand[j]) for j in chosen], rel_all


class MRMRSelector(_ColumnSelector):
    """Minimum-redundancy maximum-relevance top-``k`` (``mrmr_selection.mrmr_classif``).

    Relevance is the ANOVA F statistic and redundancy the absolute Pearson correlation
    (mrmr-selection's defaults, the "FCQ" variant). Features with zero or undefined relevance
    are never chosen, so fewer than ``k`` may be returned. Deterministic (no randomness).

    With the default ``relevance``, ``redundancy`` and ``denominator`` the ranking is computed by
    a vectorised implementation of ``mrmr_classif``'s algorithm (same constants and
    tie-breaking, same ranking -- checked against the library in ``tests/test_selection.py``),
    which takes milliseconds where the library's pandas loops take tens of seconds on
    ~1000 features. Any other setting calls ``mrmr_classif`` itself.

    Parameters
    ----------
    k : int
        Number of features to keep (seed 003: 30).
    relevance, redundancy, denominator : str
        As in ``mrmr_classif``; non-default values are passed to it.
    n_jobs : int
        Passed to ``mrmr_classif`` for non-default settings (1 = no worker processes); the
        default (vectorised) path does not use it.
    order : {"input", "ranking"}
        Column order of ``transform`` and ``get_feature_names_out``: the input order (default)
        or the mRMR order of ``ranking_``. The selected set is the same; only a downstream step
        that depends on column order (e.g. a liblinear LASSO) sees a difference.

    Attributes
    ----------
    ranking_ : list of str
        Selected features in mRMR order (``transform`` keeps input order unless
        ``order="ranking"``).
    relevance_ : Series
        Relevance score of every candidate feature (NaN for features with zero relevance).
    support_ : ndarray of bool

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(60, 6)), columns=list("abcdef"))
    >>> y = (X["a"] + X["b"] > 0).astype(int)
    >>> sorted(MRMRSelector(k=2).fit(X, y).ranking_)
    ['a', 'b']
    """

    def __init__(self, k: int = 30, relevance: str = "f", redundancy: str = "c",
                 denominator: str = "mean", n_jobs: int = 1, order: str = "input") -> None:
        self.k = k
        self.relevance = relevance
        self.redundancy = redundancy
        self.denominator = denominator
        self.n_jobs = n_jobs
        self.order = order

    def _library(self, frame: pd.DataFrame, y01: np.ndarray, k: int) -> tuple[list, pd.Series]:
        """``mrmr_classif`` itself (non-default relevance, redundancy or denominator)."""
        from mrmr import mrmr_classif

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            selected, relevance, _ = mrmr_classif(
                X=frame, y=pd.Series(y01), K=k, relevance=self.relevance,
                redundancy=self.redundancy, denominator=self.denominator,
                return_scores=True, n_jobs=self.n_jobs, show_progress=False,
            )
        return list(selected), pd.Series(relevance, dtype=float)

    def fit(self, X: Any, y: Any) -> "MRMRSelector":
        """Run mRMR on the training rows."""
        if self.order not in ("input", "ranking"):
            raise ValueError(f"order must be 'input' or 'ranking', got {self.order!r}")
        Xa, y01 = self._validate_fit(X, y)
        names = [str(n) for n in self._names_in()]
        k = int(min(self.k, len(names)))
        if k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if (self.relevance, self.redundancy, self.denominator) == ("f", "c", "mean"):
            chosen, rel = _mrmr_fcq(Xa, y01, k)
            selected = [names[j] for j in chosen]
            relevance = pd.Series(rel, index=names, dtype=float).where(rel > 0)
        else:
            selected, relevance = self._library(pd.DataFrame(Xa, columns=names), y01, k)
        if not selected:
            raise ValueError("MRMRSelector: no feature has a positive relevance on these rows")
        self.ranking_ = selected
        self.relevance_ = relevance.reindex(names)
        self.support_ = np.isin(names, selected)
        self.ranking_indices_ = np.array([names.index(f) for f in selected], dtype=int)
        return self

    def _output_indices(self) -> np.ndarray:
        if self.order == "ranking":
            return self.ranking_indices_
        return super()._output_indices()


# --------------------------------------------------------------------------------------------
# LASSO
# --------------------------------------------------------------------------------------------
def _resample(sampler: Any, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` resampled by a fresh copy of ``sampler`` (as given when it is None)."""
    if sampler is None:
        return X, y
    Xr, yr = clone(sampler).fit_resample(X, y)
    return np.asarray(Xr, dtype=float), np.asarray(yr)


def lasso_stopping_rule(solver: str, *, tol: float | None = None, thresh: float | None = None,
                        unit: str = "observation") -> str:
    """Where a :class:`LassoSelector` with these settings stops, as one report sentence.

    Examples
    --------
    >>> lasso_stopping_rule("cd", thresh=1e-7, unit="patient").split("criterion: ")[1]
    "thresh 1e-07 × the null deviance per patient (R's glmnet default: 1e-7)."
    >>> lasso_stopping_rule("cd").endswith("(absolute tolerance 1e-10 on glmnet's criterion).")
    True
    >>> lasso_stopping_rule("liblinear", tol=1e-4)
    'The LASSO is solved by liblinear at tol 0.0001, which can stop short of the optimum.'
    """
    if solver == "cd" and thresh:
        return (f"The LASSO (glmnet's coordinate descent) stops at glmnet's convergence "
                f"criterion: thresh {thresh:g} × the null deviance per {unit} (R's glmnet "
                "default: 1e-7).")
    tol = LassoSelector(solver=solver, tol=tol)._tol()  # the solver's default when None
    if solver == "cd":
        return ("The LASSO is solved to convergence by glmnet's coordinate descent (absolute "
                f"tolerance {tol:g} on glmnet's criterion).")
    return f"The LASSO is solved by {solver} at tol {tol:g}, which can stop short of the optimum."


class LassoSelector(_ColumnSelector):
    """LASSO (L1 logistic regression) selection with lambda by k-fold CV or fixed.

    Lambda is on glmnet's scale (penalty per observation): ``C = 1 / (lambda · n)`` with ``n``
    the number of training rows of the fit (see :func:`lambda_to_C`), so a paper's glmnet lambda
    (seed 002: 0.13, seed 003: 0.037) can be passed as ``lam``. As in ``cv.glmnet``, a grid of
    ``n_lambdas`` values runs log-spaced from ``lambda_max`` (smallest lambda giving all-zero
    coefficients) down to ``lambda_min_ratio · lambda_max``; each CV fold fits the whole path
    (warm starts) and scores its held-out rows; ``rule="min"`` takes the best mean score and
    ``rule="1se"`` the largest lambda within one standard error of it. Features are not scaled
    here (glmnet's ``standardize=FALSE``); put a :class:`StandardScaler` before this step.

    The non-zero coefficients at the chosen lambda are kept. If fewer than ``min_features`` are
    non-zero (common on noise), the largest lambda on the grid with at least ``min_features``
    non-zero coefficients is used instead (the first features to enter the path) and a warning
    says so; ``lambda_cv_`` keeps the originally chosen value.

    Parameters
    ----------
    cv : int
        Number of stratified folds for choosing lambda (ignored when ``lam`` or ``C`` is given).
    rule : {"min", "1se"}
        Lambda choice from the CV curve.
    lam : float, optional
        Fixed glmnet lambda (no CV).
    C : float, optional
        Fixed scikit-learn ``C`` (no CV); converted with ``lambda = 1/(C·n)``.
    scoring : {"roc_auc", "deviance"}
        CV criterion (higher AUC / lower binomial deviance is better).
    n_lambdas : int
        Grid size.
    lambda_min_ratio : float, optional
        Smallest grid lambda relative to ``lambda_max``; default 0.01 if n < p else 1e-4 (glmnet's).
    solver : {"liblinear", "saga", "cd"}
        ``liblinear`` (default; coordinate descent, fast) penalises the intercept, made negligible
        with ``intercept_scaling=1000`` (coefficients agree with glmnet to ~1e-3 relative);
        ``saga`` leaves the intercept unpenalised and matches glmnet to ~1e-6 with ``tol=1e-10``
        but is slow along a path when n < p; ``cd`` is glmnet's own algorithm
        (:mod:`vcfnb.lasso_cd`: IRLS + coordinate descent, warm-started along the lambda path,
        compiled with numba), unpenalised intercept, glmnet's coefficients to ~1e-11 at a tight
        ``tol``; along a path it is several times faster than ``liblinear``, which solves every
        lambda from scratch (``screening`` does not apply: every feature is visited).
    tol : float, optional
        Solver tolerance; default 1e-6 for ``liblinear``/``saga`` and, for ``cd``, 1e-10 on
        glmnet's criterion ``max_j v_j Δb_j²`` (objective within ~1e-7 of the optimum, as
        ``liblinear`` at 1e-6; glmnet's default ``thresh`` is 1e-7, see ``thresh``).
    thresh : float, optional
        ``cd`` only, replaces ``tol``: glmnet's own convergence threshold (its ``thresh``,
        default 1e-7), relative to the null deviance: coordinate descent stops when no update
        lowers the objective by more than ``thresh`` times the null deviance per observation,
        ``-(ȳ log ȳ + (1 − ȳ) log(1 − ȳ))`` of the fit's rows (``shr = thresh · dev0`` in
        glmnet's Fortran, observation weights summing to 1). ``thresh=1e-7`` stops where R's
        ``glmnet``/``cv.glmnet`` stop by default; on correlated radiomics features with n < p
        that is ~10x fewer coordinate-descent passes than ``tol=1e-10``.
    path_stop : bool
        ``cd`` only: end the full-data path where glmnet ends a path over its own lambda grid
        (``glmnet.control()`` defaults: from the 5th lambda on, at the first lambda whose fit
        explains more than 0.999 of the null deviance, a near-separated fit, or less than 1e-5
        more of it than the previous one); the CV folds then score that shorter grid, as
        ``cv.glmnet`` does. The solutions on the kept lambdas are unchanged; only a choice that
        would have fallen on the dropped, saturated end differs. ``False`` (default, what
        the studies' runs use): the whole grid. On the vcf paper cohort's DLRN refit (real
        labels and 8 shuffled ones) both gave the same test AUC at the same CPU time: the
        costly shuffled-label fits there are not at the full-data path's saturated end.
    max_iter : int
        Solver iterations (``cd``: IRLS steps per lambda, at most 100).
    min_features : int
        Minimum number of features to keep (see above).
    random_state : int, optional
        Seeds the CV fold assignment (and the solver).
    n_jobs : int
        CV folds run in parallel.
    screening : bool
        Solve each lambda on a screened set of features (glmnet's sequential strong rule:
        the features non-zero at the previous lambda plus those whose gradient passes
        ``2·lambda − lambda_prev``), then check the optimality (KKT) condition
        ``|x_j'(y − p)|/n ≤ lambda`` on every left-out feature and refit with any violator
        added, until none is left. The solution is that of the full problem (same convex
        optimum, within solver tolerance), found 5-30× faster when most features stay at zero
        (thousands of radiomics/deep features, tens selected). ``False`` fits all features.
    compute_path : bool
        Also fit the full-data coefficient path for plotting (``path_``).
    sampler : imblearn sampler, optional
        Resample the rows of every fit (e.g. ``RandomOverSampler``): the final fit on all
        rows, and inside each CV fold the fold's training part only, so that no copy of a
        held-out row is fitted on (oversampling *before* this step would put copies of the
        same patient on both sides of the inner folds).

    Attributes
    ----------
    lambda_ : float
        Lambda of the final fit. ``C_`` is the matching scikit-learn C.
    lambda_min_, lambda_1se_ : float or None
        The two CV choices (None with a fixed lambda).
    lambdas_ : ndarray
        The lambda grid (descending; ended early by ``path_stop``).
    path_stopped_ : int or None
        With ``path_stop``: how many lambdas of the ``n_lambdas`` grid the full-data path kept
        when it ended early, else None.
    cv_results_ : DataFrame or None
        Columns ``lambda, log_lambda, mean_score, sd_score, se_score, n_nonzero``
        (``n_nonzero`` from the full-data path); None with a fixed lambda.
    path_ : DataFrame or None
        Long table ``lambda, log_lambda, feature, coef`` of the full-data path (n_lambdas × p rows).
    coef_ : Series
        Coefficients of the selected features (index = feature names) at ``lambda_``.
    intercept_ : float
    estimator_ : LogisticRegression
        The final fit on all input features.
    fallback_ : bool
        True when the ``min_features`` fallback was used.
    support_ : ndarray of bool

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(100, 8)), columns=[f"f{i}" for i in range(8)])
    >>> y = (X["f0"] - X["f1"] + rng.normal(size=100) > 0).astype(int)
    >>> sel = LassoSelector(cv=5, random_state=0).fit(X, y)
    >>> {"f0", "f1"} <= set(sel.coef_.index)
    True
    >>> LassoSelector(lam=0.13).fit(X, y).cv_results_ is None
    True
    """

    def __init__(self, cv: int = 10, rule: str = "min", lam: float | None = None,
                 C: float | None = None, scoring: str = "roc_auc", n_lambdas: int = 50,
                 lambda_min_ratio: float | None = None, solver: str = "liblinear",
                 tol: float | None = None, thresh: float | None = None,
                 path_stop: bool = False,
                 max_iter: int = 20000, min_features: int = 1, random_state: int | None = None,
                 n_jobs: int = 1, compute_path: bool = True, screening: bool = True,
                 sampler: Any = None) -> None:
        self.cv = cv
        self.rule = rule
        self.lam = lam
        self.C = C
        self.scoring = scoring
        self.n_lambdas = n_lambdas
        self.lambda_min_ratio = lambda_min_ratio
        self.solver = solver
        self.tol = tol
        self.thresh = thresh
        self.path_stop = path_stop
        self.max_iter = max_iter
        self.min_features = min_features
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.compute_path = compute_path
        self.screening = screening
        self.sampler = sampler

    def stopping_rule(self, unit: str = "observation") -> str:
        """One sentence for a report: where this LASSO's solver stops
        (:func:`lasso_stopping_rule` of its ``solver``, ``tol`` and ``thresh``)."""
        return lasso_stopping_rule(self.solver, tol=self.tol, thresh=self.thresh, unit=unit)

    # -- internals -----------------------------------------------------------------------
    def _tol(self) -> float:
        if self.tol is not None:
            return float(self.tol)
        return 1e-10 if self.solver == "cd" else 1e-6

    def _cd_tol(self, y: np.ndarray) -> float:
        """The ``cd`` solver's absolute tolerance on these rows (``thresh`` × null deviance
        per observation when ``thresh`` is given, else ``tol``)."""
        if self.thresh is None:
            return self._tol()
        ybar = float(np.mean(y))
        if not 0.0 < ybar < 1.0:
            return float(self.thresh)  # one class: nothing to fit, any tolerance does
        return float(self.thresh) * -(ybar * np.log(ybar) + (1.0 - ybar) * np.log1p(-ybar))

    def _model(self, lam: float, n: int, warm: bool = False) -> LogisticRegression:
        solver = "liblinear" if self.solver == "cd" else self.solver  # cd: a container only
        return _l1_logistic(lambda_to_C(lam, n), solver, self._tol(), self.max_iter,
                            self.random_state, warm_start=warm and solver != "liblinear")

    def _cd_models(self, X: np.ndarray, y: np.ndarray, lambdas: np.ndarray, stop: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, list]:
        """glmnet's path (:func:`vcfnb.lasso_cd.l1_logistic_path`; ``stop``: glmnet's rules
        for ending it early) and one fitted-looking ``LogisticRegression`` per lambda fitted."""
        from vcfnb.lasso_cd import l1_logistic_path

        coefs, inters, _ = l1_logistic_path(X, y, lambdas, tol=self._cd_tol(y),
                                            max_outer=min(int(self.max_iter), 100), stop=stop)
        models = []
        for lam, c, b0 in zip(lambdas, coefs, inters):
            m = self._model(float(lam), X.shape[0])
            m.coef_, m.intercept_ = c[None, :].copy(), np.array([b0])
            m.classes_, m.n_features_in_, m.n_iter_ = np.array([0, 1]), X.shape[1], np.array([0])
            models.append(m)
        return coefs, inters, models

    def _fit_one(self, X: np.ndarray, y: np.ndarray, lam: float) -> LogisticRegression:
        """The L1 fit at ``lam`` on all columns of ``X`` (screened: see ``screening``)."""
        if self.solver == "cd":
            return self._cd_models(X, y, np.array([float(lam)]))[2][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if not self.screening:
                return self._model(lam, X.shape[0]).fit(X, y)
            # strong rule from the intercept-only model (at lambda_max)
            g0 = np.abs(X.T @ (y - y.mean())) / X.shape[0]
            return self._screened(X, y, lam, g0 >= 2.0 * lam - g0.max())[0]

    def _screened(self, X: np.ndarray, y: np.ndarray, lam: float, active: np.ndarray
                  ) -> tuple[LogisticRegression, np.ndarray]:
        """L1 fit at ``lam`` on the ``active`` columns, grown by KKT violators until none is
        left; returns the model (coefficients expanded to all columns) and the gradient
        ``|x_j'(y − p)|/n`` of every column at that fit (the next lambda's strong rule)."""
        n, p = X.shape
        active = np.asarray(active, dtype=bool).copy()
        if not active.any():
            active[int(np.argmax(np.abs(X.T @ (y - y.mean()))))] = True
        while True:
            cols = np.flatnonzero(active)
            model = self._model(lam, n).fit(X[:, cols], y)
            b = model.coef_.ravel()
            resid = y - special.expit(X[:, cols] @ b + model.intercept_[0])
            grad = np.abs(X.T @ resid) / n
            violators = ~active & (grad > lam * (1.0 + 1e-4))
            if not violators.any():
                break
            active |= violators
        coef = np.zeros((1, p))
        coef[0, cols] = b
        model.coef_ = coef
        model.n_features_in_ = p
        return model, grad

    def _path(self, X: np.ndarray, y: np.ndarray, lambdas: np.ndarray,
              models: list | None = None, stop: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (n_lambdas × p) and intercepts along a descending lambda grid (the
        fitted models are appended to ``models`` when given; ``stop``: ``cd``'s path may end
        early, see ``path_stop``)."""
        n, p = X.shape
        if self.solver == "cd":
            coefs, inters, fitted = self._cd_models(X, y, lambdas, stop=stop)
            if models is not None:
                models.extend(fitted)
            return coefs, inters
        coefs = np.zeros((lambdas.size, p))
        inters = np.zeros(lambdas.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if not self.screening:
                model = self._model(lambdas[0], n, warm=True)
                for i, lam in enumerate(lambdas):
                    model.set_params(C=lambda_to_C(lam, n))
                    model.fit(X, y)
                    coefs[i] = model.coef_.ravel()
                    inters[i] = model.intercept_[0]
                return coefs, inters
            grad = np.abs(X.T @ (y - y.mean())) / n  # intercept-only model
            lam_prev = float(grad.max())
            nonzero = np.zeros(p, dtype=bool)
            for i, lam in enumerate(lambdas):
                strong = grad >= 2.0 * lam - lam_prev
                model, grad = self._screened(X, y, lam, strong | nonzero)
                if models is not None:
                    models.append(model)
                coefs[i] = model.coef_.ravel()
                inters[i] = model.intercept_[0]
                nonzero = coefs[i] != 0
                lam_prev = lam
        return coefs, inters

    def _fold_scores(self, X, y, train, test, lambdas) -> np.ndarray:
        coefs, inters = self._path(*_resample(self.sampler, X[train], y[train]), lambdas)
        eta = X[test] @ coefs.T + inters  # (n_test, n_lambdas)
        yt = y[test]
        if self.scoring == "roc_auc":
            return np.array([_auc_from_scores(yt, eta[:, i]) for i in range(lambdas.size)])
        prob = np.clip(1.0 / (1.0 + np.exp(-eta)), 1e-15, 1 - 1e-15)
        ll = yt[:, None] * np.log(prob) + (1 - yt[:, None]) * np.log(1 - prob)
        return -2.0 * ll.mean(axis=0)

    def _grid(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        n, p = X.shape
        lam_max = np.max(np.abs((X - X.mean(axis=0)).T @ (y - y.mean()))) / n
        if not np.isfinite(lam_max) or lam_max <= 0:
            lam_max = 1.0
        ratio = self.lambda_min_ratio
        if ratio is None:
            ratio = 0.01 if n < p else 1e-4
        return np.geomspace(lam_max, lam_max * ratio, int(self.n_lambdas))

    # -- public --------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, groups: Any = None) -> "LassoSelector":
        """Choose lambda on the training rows and keep the non-zero coefficients.

        ``groups`` (e.g. the patient of each row when a patient has several rows): the lambda
        CV folds keep a group's rows together (``StratifiedGroupKFold``)."""
        if self.rule not in ("min", "1se"):
            raise ValueError(f"rule must be 'min' or '1se', got {self.rule!r}")
        if self.scoring not in ("roc_auc", "deviance"):
            raise ValueError(f"scoring must be 'roc_auc' or 'deviance', got {self.scoring!r}")
        if self.solver not in ("saga", "liblinear", "cd"):
            raise ValueError(f"solver must be 'saga', 'liblinear' or 'cd', got {self.solver!r}")
        if self.thresh is not None and (self.solver != "cd" or not float(self.thresh) > 0):
            raise ValueError("thresh (glmnet's relative convergence threshold) needs solver='cd' "
                             f"and a positive value, got thresh={self.thresh!r}, solver={self.solver!r}")
        if self.lam is not None and self.C is not None:
            raise ValueError("give either lam or C, not both")
        X_cv, y_cv = self._validate_fit(X, y)  # CV folds split these (original) rows
        Xa, y01 = _resample(self.sampler, X_cv, y_cv)  # rows of the final fit
        n, p = Xa.shape
        names = self._names_in()
        lambdas = self._grid(Xa, y01)
        fixed = self.lam is not None or self.C is not None
        path_coefs = None
        path_models: list = []
        self.path_stopped_ = None
        if self.compute_path or not fixed:
            path_coefs, _ = self._path(Xa, y01, lambdas, path_models,
                                       stop=bool(self.path_stop) and self.solver == "cd")
            if path_coefs.shape[0] < lambdas.size:  # glmnet's rules ended the path: the folds
                self.path_stopped_ = int(path_coefs.shape[0])  # score the grid it kept
                lambdas = lambdas[:self.path_stopped_]

        self.lambda_min_ = self.lambda_1se_ = None
        self.cv_results_ = None
        if fixed:
            lam = float(self.lam) if self.lam is not None else C_to_lambda(float(self.C), n)
        else:
            if groups is None:
                folds = StratifiedKFold(n_splits=int(self.cv), shuffle=True,
                                        random_state=self.random_state).split(X_cv, y_cv)
            else:
                from sklearn.model_selection import StratifiedGroupKFold

                folds = StratifiedGroupKFold(n_splits=int(self.cv), shuffle=True,
                                             random_state=self.random_state).split(
                    X_cv, y_cv, np.asarray(groups).ravel())
            scores = np.array(pmap(lambda f: self._fold_scores(X_cv, y_cv, f[0], f[1], lambdas),
                                   list(folds), n_jobs=self.n_jobs))  # (n_folds, n_lambdas)
            # a fold whose held-out rows hold one class only has no AUC (small data, many
            # folds): it is left out of the mean
            scores = scores[np.isfinite(scores).all(axis=1)]
            if scores.shape[0] == 0:
                raise ValueError(
                    f"LassoSelector: none of the {self.cv} CV folds of these {len(y_cv)} rows "
                    "has both classes among its held-out rows; use fewer folds (cv)")
            mean = scores.mean(axis=0)
            sd = scores.std(axis=0, ddof=1) if scores.shape[0] > 1 else np.zeros(mean.size)
            se = sd / np.sqrt(scores.shape[0])
            sign = 1.0 if self.scoring == "roc_auc" else -1.0  # +: higher is better
            best = int(np.argmax(sign * mean))  # first = largest lambda among ties
            ok = sign * mean >= sign * mean[best] - se[best]
            one_se = int(np.flatnonzero(ok)[0])  # largest lambda within 1 SE
            self.lambda_min_ = float(lambdas[best])
            self.lambda_1se_ = float(lambdas[one_se])
            lam = self.lambda_min_ if self.rule == "min" else self.lambda_1se_
            self.cv_results_ = pd.DataFrame({
                "lambda": lambdas, "log_lambda": np.log(lambdas), "mean_score": mean,
                "sd_score": sd, "se_score": se,
                "n_nonzero": (path_coefs != 0).sum(axis=1),
            })
        self.lambda_cv_ = lam
        on_path = [m for m, lm in zip(path_models, lambdas) if lm == lam]
        est = on_path[0] if on_path else self._fit_one(Xa, y01, lam)  # the path's fit at lam
        support = est.coef_.ravel() != 0
        self.fallback_ = False
        if support.sum() < self.min_features:
            if path_coefs is None:
                path_coefs, _ = self._path(Xa, y01, lambdas)
            counts = (path_coefs != 0).sum(axis=1)
            need = min(int(self.min_features), p)
            idx = np.flatnonzero(counts >= need)
            if idx.size:
                new_lam = float(lambdas[idx[0]])
            else:  # grid too coarse: go below its end
                new_lam = float(lambdas[-1]) / 10.0
            warnings.warn(
                f"LassoSelector: {int(support.sum())} non-zero coefficient(s) at lambda={lam:.4g}; "
                f"using lambda={new_lam:.4g}, the largest on the path with >= {need} feature(s)",
                UserWarning, stacklevel=2,
            )
            lam = new_lam
            est = self._fit_one(Xa, y01, lam)
            support = est.coef_.ravel() != 0
            self.fallback_ = True
            if support.sum() < need:  # still nothing: keep the largest |coef| of the path end
                order = np.argsort(-np.abs(path_coefs[-1]), kind="stable")[:need]
                support = np.zeros(p, dtype=bool)
                support[order] = True
        self.lambdas_ = lambdas
        self.lambda_ = float(lam)
        self.C_ = lambda_to_C(self.lambda_, n)
        self.estimator_ = est
        self.support_ = support
        coef = est.coef_.ravel()
        self.coef_ = pd.Series(coef[support], index=pd.Index(names[support], name="feature"),
                               name="coef")
        self.intercept_ = float(est.intercept_[0])
        if path_coefs is not None and self.compute_path:
            self.path_ = pd.DataFrame({
                "lambda": np.repeat(lambdas, p),
                "log_lambda": np.repeat(np.log(lambdas), p),
                "feature": np.tile(np.asarray(names, dtype=object), lambdas.size),
                "coef": path_coefs.ravel(),
            })
        else:
            self.path_ = None
        return self


# --------------------------------------------------------------------------------------------
# RFE with a linear SVM
# --------------------------------------------------------------------------------------------
class RFESelector(_ColumnSelector):
    """Recursive feature elimination with a linear SVM; feature count by inner CV AUC.

    Wraps :class:`sklearn.feature_selection.RFECV` around ``SVC(kernel="linear")`` with
    stratified shuffled folds (seed 000: 5-fold CV AUC).

    Parameters
    ----------
    cv : int
        Inner stratified folds.
    step : int
        Features removed per elimination round.
    min_features_to_select : int
    C : float
        SVM cost.
    scoring : str
        scikit-learn scorer (default ``"roc_auc"``).
    random_state : int, optional
        Seeds the fold assignment.
    n_jobs : int
    sampler : imblearn sampler, optional
        Resample the rows of every SVM fit (e.g. ``RandomOverSampler``): inside each CV fold
        the fold's training part only, and the final elimination on all rows.

    Attributes
    ----------
    n_features_ : int
    ranking_ : ndarray
        RFE ranking (1 = selected).
    cv_results_ : DataFrame
        Columns ``n_features, mean_score, sd_score`` ("AUC vs number of features").
    coef_ : Series
        Linear SVM weights of the selected features.
    rfecv_ : RFECV
    support_ : ndarray of bool

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(80, 6)), columns=list("abcdef"))
    >>> y = (X["a"] + rng.normal(scale=0.5, size=80) > 0).astype(int)
    >>> "a" in RFESelector(cv=5, random_state=0).fit(X, y).get_feature_names_out()
    True
    """

    def __init__(self, cv: int = 5, step: int = 1, min_features_to_select: int = 1, C: float = 1.0,
                 scoring: str = "roc_auc", random_state: int | None = None,
                 n_jobs: int = 1, sampler: Any = None) -> None:
        self.cv = cv
        self.step = step
        self.min_features_to_select = min_features_to_select
        self.C = C
        self.scoring = scoring
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.sampler = sampler

    def fit(self, X: Any, y: Any) -> "RFESelector":
        """Run RFECV on the training rows."""
        Xa, y01 = self._validate_fit(X, y)
        svm = SVC(kernel="linear", C=self.C)
        if self.sampler is not None:  # resampled inside each fit: the inner training rows only
            svm = Pipeline([("sampler", clone(self.sampler)), ("svc", svm)])
        rfecv = RFECV(
            svm, step=self.step, min_features_to_select=self.min_features_to_select,
            importance_getter="auto" if self.sampler is None else "named_steps.svc.coef_",
            # the folds as index arrays (the same folds): a fitted selector stores no splitter
            # object, so a saved model holds plain data only (vcfnb.bundle)
            cv=list(StratifiedKFold(n_splits=int(self.cv), shuffle=True,
                                    random_state=self.random_state).split(Xa, y01)),
            scoring=self.scoring, n_jobs=self.n_jobs,
        ).fit(Xa, y01)
        res = rfecv.cv_results_
        n_feat = res.get("n_features")
        if n_feat is None:  # pragma: no cover - older scikit-learn
            n_feat = np.arange(self.min_features_to_select, Xa.shape[1] + 1)
        self.rfecv_ = rfecv
        self.support_ = np.asarray(rfecv.support_, dtype=bool)
        self.n_features_ = int(rfecv.n_features_)
        self.ranking_ = np.asarray(rfecv.ranking_)
        self.cv_results_ = pd.DataFrame({
            "n_features": np.asarray(n_feat, dtype=int),
            "mean_score": np.asarray(res["mean_test_score"]),
            "sd_score": np.asarray(res["std_test_score"]),
        })
        names = self._names_in()
        final = rfecv.estimator_[-1] if self.sampler is not None else rfecv.estimator_
        self.coef_ = pd.Series(final.coef_.ravel(),
                               index=pd.Index(names[self.support_], name="feature"), name="coef")
        return self


# --------------------------------------------------------------------------------------------
# sequential forward selection
# --------------------------------------------------------------------------------------------
def _sfs_candidate_score(estimator, X, y, cols, splits, scoring) -> tuple[float, float]:
    """Mean and SD over ``splits`` of the score of ``estimator`` on columns ``cols``."""
    Xs = X[:, cols]
    scores = np.empty(len(splits))
    for i, (tr, te) in enumerate(splits):
        est = clone(estimator).fit(Xs[tr], y[tr])
        if scoring == "roc_auc":
            if hasattr(est, "decision_function"):
                s = est.decision_function(Xs[te])
            else:
                s = est.predict_proba(Xs[te])[:, 1]
            scores[i] = _auc_from_scores(y[te], s)
        else:
            scores[i] = get_scorer(scoring)(est, Xs[te], y[te])
    return float(scores.mean()), float(scores.std(ddof=1)) if scores.size > 1 else 0.0


def _sfs_batch(estimator, X, y, selected, candidates, splits, scoring):
    return [_sfs_candidate_score(estimator, X, y, selected + [j], splits, scoring)
            for j in candidates]


class _RBFKernelScorer:
    """CV AUC of an RBF-kernel SVM on candidate feature sets, from precomputed kernels.

    Squared distances are additive over features, so the distance matrix of ``selected + [j]``
    is the selected set's matrix plus one feature's; ``gamma="scale"`` is rebuilt per fold from
    per-feature sums exactly as ``SVC`` computes it (``1 / (n_features * X_train.var())``). The
    kernels of all folds come from one numpy ``exp`` (``exp(-gamma_f * D)``: elementwise the
    values a per-fold ``exp`` gives) and one compiled call (:func:`vcfnb.svm_smo.fold_aucs`)
    fits every fold's SVM and scores its test rows. :mod:`vcfnb.svm_smo` is libsvm's C-SVC
    solver as scikit-learn bundles it, ported step for step: the support, dual coefficients and
    intercept are those of a ``_libsvm.fit`` call on the precomputed kernel bit for bit — the
    same optimisation problem as ``SVC(kernel="rbf", C=C, gamma=gamma)``, without
    scikit-learn's per-fit overhead or a Python loop over the folds. The compiled call sums each
    decision value over the support in libsvm's predict order, while the libsvm path sums them
    with numpy's BLAS matrix-vector product, whose rounding can differ in the last bits (it can
    even give two identical test rows different values). So a fold in which a positive and a
    negative test row come within that rounding of each other (ties included) is scored again
    as the libsvm path scores it: ``-(K_te[:, support] @ dual + intercept)`` with the ported
    fit's support and coefficients. Every fold AUC is therefore the libsvm path's.

    The first use in a process checks the compiled path's decision values against the public
    ``SVC(kernel="precomputed")`` (``rtol`` 1e-7, ``atol`` 1e-9); on any difference every later
    call takes the libsvm path instead (``_verified`` False): one private ``_libsvm.fit`` call
    per fold, itself checked against ``SVC`` on its first use and replaced by the public
    estimator on any difference (``_libsvm_verified`` False).
    """

    _verified: bool | None = None  # the compiled path (vcfnb.svm_smo) agrees with SVC
    _libsvm_verified: bool | None = None  # the per-fold _libsvm.fit path agrees with SVC
    _CHUNK_BYTES = 1 << 24  # kernel matrices held at once (folds per numpy exp call)

    def __init__(self, X: np.ndarray, y01: np.ndarray, splits, C: float, gamma) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.y = y01
        self.yf = y01.astype(np.float64)
        self.splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splits]
        self.C = float(C)
        self.gamma = gamma
        self.n_tr = np.array([len(tr) for tr, _ in self.splits], dtype=np.float64)
        self.s1 = np.stack([self.X[tr].sum(0) for tr, _ in self.splits])
        self.s2 = np.stack([(self.X[tr] ** 2).sum(0) for tr, _ in self.splits])
        # the folds for the compiled path: padded index arrays and their lengths
        n_f = len(self.splits)
        self.ntr = np.array([len(tr) for tr, _ in self.splits], dtype=np.int64)
        self.nte = np.array([len(te) for _, te in self.splits], dtype=np.int64)
        self.tr = np.zeros((n_f, int(self.ntr.max())), dtype=np.int64)
        self.te = np.zeros((n_f, int(self.nte.max())), dtype=np.int64)
        for f, (tr, te) in enumerate(self.splits):
            self.tr[f, :len(tr)] = tr
            self.te[f, :len(te)] = te
        self.y64 = np.ascontiguousarray(y01, dtype=np.int64)
        n = self.X.shape[0]
        self.chunk = max(1, self._CHUNK_BYTES // (8 * n * n))

    def distances(self, cols) -> np.ndarray:
        n = self.X.shape[0]
        D = np.zeros((n, n))
        for c in cols:
            x = self.X[:, c]
            D += (x[:, None] - x[None, :]) ** 2
        return D

    def _gammas(self, cols) -> np.ndarray:
        k = len(cols)
        if isinstance(self.gamma, str) and self.gamma == "scale":
            m = self.n_tr * k
            mean = self.s1[:, cols].sum(1) / m
            var = self.s2[:, cols].sum(1) / m - mean ** 2
            return np.where(var > 0, 1.0 / (k * np.where(var > 0, var, 1.0)), 1.0)
        if isinstance(self.gamma, str) and self.gamma == "auto":
            return np.full(len(self.splits), 1.0 / k)
        return np.full(len(self.splits), float(self.gamma))

    def _decision(self, K_tr: np.ndarray, y_tr: np.ndarray, K_te: np.ndarray) -> np.ndarray:
        """The libsvm path's decision values of one fold."""
        from sklearn.svm import _libsvm

        if _RBFKernelScorer._libsvm_verified is False:
            return SVC(kernel="precomputed", C=self.C).fit(K_tr, y_tr).decision_function(K_te)
        _libsvm.set_verbosity_wrap(0)
        out = _libsvm.fit(np.ascontiguousarray(K_tr), y_tr.astype(np.float64), svm_type=0,
                          kernel="precomputed", C=self.C, tol=1e-3, cache_size=200,
                          max_iter=-1, random_seed=0)
        support, dual, intercept = out[0], out[3], out[4]
        dec = -(K_te[:, support] @ dual[0] + intercept[0])
        if _RBFKernelScorer._libsvm_verified is None:
            ref = SVC(kernel="precomputed", C=self.C).fit(K_tr, y_tr).decision_function(K_te)
            _RBFKernelScorer._libsvm_verified = bool(np.allclose(dec, ref, rtol=1e-7, atol=1e-9))
            if not _RBFKernelScorer._libsvm_verified:
                return ref
        return dec

    @staticmethod
    def _pair_auc(dec: np.ndarray, yt: np.ndarray) -> float:
        diff = dec[yt == 1][:, None] - dec[yt == 0][None, :]  # pairwise: exact AUC, no ranks
        return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size

    def _scores_libsvm(self, D: np.ndarray, gam: np.ndarray) -> np.ndarray:
        scores = np.empty(len(self.splits))
        for i, (tr, te) in enumerate(self.splits):
            K_tr = np.exp(-gam[i] * D[np.ix_(tr, tr)])
            K_te = np.exp(-gam[i] * D[np.ix_(te, tr)])
            scores[i] = self._pair_auc(self._decision(K_tr, self.y[tr], K_te), self.y[te])
        return scores

    def _scores_fast(self, D: np.ndarray, gam: np.ndarray) -> np.ndarray | None:
        """Fold AUCs by the compiled path; None if its first-use check failed."""
        from vcfnb.svm_smo import fold_aucs, svc_fit_precomputed

        n_f = len(self.splits)
        scores = np.empty(n_f)
        for s in range(0, n_f, self.chunk):
            sl = slice(s, min(s + self.chunk, n_f))
            E = np.exp(-gam[sl, None, None] * D[None])
            aucs, dec, amb = fold_aucs(E, self.tr[sl], self.ntr[sl], self.te[sl], self.nte[sl],
                                       self.y64, self.C)
            if _RBFKernelScorer._verified is None:  # first use: the public estimator
                ok = True
                for f in range(min(E.shape[0], 10)):
                    tr, te = self.splits[s + f]
                    ref = SVC(kernel="precomputed", C=self.C).fit(
                        E[f][np.ix_(tr, tr)], self.y[tr]).decision_function(E[f][np.ix_(te, tr)])
                    ok = ok and bool(np.allclose(dec[f, :len(te)], ref, rtol=1e-7, atol=1e-9))
                _RBFKernelScorer._verified = ok
                if not ok:
                    return None
            for f in np.flatnonzero(amb):  # near-ties: the libsvm path's summation
                tr, te = self.splits[s + f]
                support, dual, intercept, _ = svc_fit_precomputed(E[f][np.ix_(tr, tr)],
                                                                  self.y[tr], self.C)
                dec_f = -(E[f][np.ix_(te, tr)][:, support] @ dual + intercept)
                aucs[f] = self._pair_auc(dec_f, self.y[te])
            scores[sl] = aucs
        return scores

    def score(self, D_sel: np.ndarray, cols) -> tuple[float, float]:
        """Mean and SD over the folds of the AUC on columns ``cols`` (last one added to D_sel)."""
        x = self.X[:, cols[-1]]
        D = D_sel + (x[:, None] - x[None, :]) ** 2
        gam = self._gammas(cols)
        scores = None
        if _RBFKernelScorer._verified is not False:
            scores = self._scores_fast(D, gam)
        if scores is None:
            scores = self._scores_libsvm(D, gam)
        return float(scores.mean()), float(scores.std(ddof=1)) if scores.size > 1 else 0.0


def _sfs_fast_batch(scorer: _RBFKernelScorer, selected: list[int], candidates: list[int]):
    D_sel = scorer.distances(selected)
    return [scorer.score(D_sel, selected + [j]) for j in candidates]


class SFSSelector(_ColumnSelector):
    """Sequential forward selection scored by repeated stratified k-fold CV (RBF SVM by default).

    Starting from no feature, each step adds the feature that maximises the mean CV score of
    ``estimator`` on the selected set plus that feature; selection stops when the best gain is
    below ``tol`` (seed 004: 1e-6), when ``max_features`` is reached, or when no feature is left.
    The same folds (``RepeatedStratifiedKFold`` seeded by ``random_state``) score every candidate,
    which is the algorithm of scikit-learn's ``SequentialFeatureSelector(direction="forward",
    n_features_to_select="auto", tol=tol)`` — written out here to record the history and to
    score AUC from the decision function without per-fold overhead. Candidates are scored in
    parallel with ``n_jobs`` on vcfnb's worker pool (:func:`vcfnb.parallel.pmap`; results do not
    depend on ``n_jobs``).

    Parameters
    ----------
    estimator : estimator, optional
        Default ``SVC(kernel="rbf", C=C, gamma=gamma)``.
    n_splits, n_repeats : int
        Repeated stratified k-fold (paper: 10 folds × 1000 repeats).
    tol : float
        Minimum gain in mean CV score to add a feature.
    max_features : int, optional
    C, gamma : SVM parameters used when ``estimator`` is None.
    scoring : str
        ``"roc_auc"`` (fast path) or any scikit-learn scorer name.
    random_state : int, optional
    n_jobs : int
        Worker processes scoring the candidates of a step (None: 1; negative: all CPUs). Inside
        one of vcfnb's workers (e.g. a permutation of
        :func:`vcfnb.models.permutation_test`) always 1: no pool is started within a pool.

    Attributes
    ----------
    history_ : DataFrame
        One row per step: ``step, feature, score, score_sd, gain, n_features, accepted``. The last
        row is the best rejected candidate when selection stopped on ``tol``.
    ranking_ : list of str
        Selected features in order of addition.
    support_ : ndarray of bool

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(60, 5)), columns=list("abcde"))
    >>> y = (X["a"] + 0.5 * rng.normal(size=60) > 0).astype(int)
    >>> sfs = SFSSelector(n_splits=5, n_repeats=2, random_state=0).fit(X, y)
    >>> sfs.ranking_[0]
    'a'
    """

    def __init__(self, estimator: Any = None, n_splits: int = 10, n_repeats: int = 10,
                 tol: float = 1e-6, max_features: int | None = None, C: float = 1.0,
                 gamma: str | float = "scale", scoring: str = "roc_auc",
                 random_state: int | None = None, n_jobs: int = 1) -> None:
        self.estimator = estimator
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.tol = tol
        self.max_features = max_features
        self.C = C
        self.gamma = gamma
        self.scoring = scoring
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any) -> "SFSSelector":
        """Run forward selection on the training rows."""
        Xa, y01 = self._validate_fit(X, y)
        n, p = Xa.shape
        minority = int(min(y01.sum(), y01.size - y01.sum()))
        if minority < int(self.n_splits):
            raise ValueError(f"only {minority} cases of the minority class for n_splits="
                             f"{self.n_splits}: a fold would hold one class; lower n_splits")
        est = self.estimator if self.estimator is not None else SVC(
            kernel="rbf", C=self.C, gamma=self.gamma)
        splits = list(RepeatedStratifiedKFold(
            n_splits=int(self.n_splits), n_repeats=int(self.n_repeats),
            random_state=self.random_state).split(Xa, y01))
        max_features = p if self.max_features is None else min(int(self.max_features), p)
        names = self._names_in()
        selected: list[int] = []
        current = -np.inf
        rows = []
        # vcfnb's pool (vcfnb.parallel.pmap); 1 inside one of its workers (e.g. a permutation
        # of permutation_test), so a nested selection never starts pools of pools
        n_jobs = 1 if self.n_jobs is None else resolve_n_jobs(self.n_jobs)
        fast = self.estimator is None and self.scoring == "roc_auc"
        scorer = _RBFKernelScorer(Xa, y01, splits, self.C, self.gamma) if fast else None
        while len(selected) < max_features:
            candidates = [j for j in range(p) if j not in selected]
            score = (functools.partial(_sfs_fast_batch, scorer, list(selected)) if fast else
                     functools.partial(_sfs_batch, est, Xa, y01, list(selected), splits=splits,
                                       scoring=self.scoring))
            workers = min(len(candidates), n_jobs)
            if workers == 1:
                results = score(candidates)
            else:  # one batch of candidates per worker; results in candidate order
                batches = [[int(j) for j in b]
                           for b in np.array_split(np.array(candidates), workers)]
                results = [r for part in pmap(score, batches, n_jobs=workers) for r in part]
            means = np.array([r[0] for r in results])
            best = int(np.argmax(means))
            gain = means[best] - current
            accepted = bool(gain >= self.tol)
            rows.append({
                "step": len(rows) + 1, "feature": names[candidates[best]],
                "score": means[best], "score_sd": results[best][1],
                "gain": gain if np.isfinite(current) else np.nan,
                "n_features": len(selected) + 1, "accepted": accepted,
            })
            if not accepted:
                break
            selected.append(candidates[best])
            current = means[best]
        support = np.zeros(p, dtype=bool)
        support[selected] = True
        self.support_ = support
        self.ranking_ = [str(names[j]) for j in selected]
        self.history_ = pd.DataFrame(rows, columns=["step", "feature", "score", "score_sd", "gain",
                                                    "n_features", "accepted"])
        return self


# --------------------------------------------------------------------------------------------
# input names of a saved model
# --------------------------------------------------------------------------------------------
class RenameColumns(TransformerMixin, BaseEstimator):
    """Rename the columns of a DataFrame (``mapping``: given name → name the next step knows).

    Stateless: put it first in a pipeline of already fitted steps when the rows reach the saved
    model under other names than the ones it was fitted on (e.g. the names a feature recipe
    gives, :func:`vcfnb.features.patient_table`). Raises naming the missing columns.

    Examples
    --------
    >>> RenameColumns({"T2_a": "a"}).transform(pd.DataFrame({"T2_a": [1.0]})).columns.tolist()
    ['a']
    """

    def __init__(self, mapping: dict | None = None) -> None:
        self.mapping = mapping

    def fit(self, X: Any, y: Any = None) -> "RenameColumns":
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def transform(self, X: Any) -> pd.DataFrame:
        mapping = dict(self.mapping or {})
        X = pd.DataFrame(X)
        missing = [c for c in mapping if c not in X.columns]
        if missing:
            raise ValueError(f"RenameColumns: column(s) {missing[:5]} missing"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        return X[list(mapping)].rename(columns=mapping)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(list(dict(self.mapping or {}).values()), dtype=object)
