"""Classifiers, radscores and leakage-free evaluation (patient split, CV, nested CV, permutations).

- The eight classifiers of seed 001 (``LR, SVM, KNN, RandomForest, ExtraTrees, XGBoost, LightGBM,
  MLP``) with small default grids tuned by inner stratified 5-fold CV AUC
  (:func:`make_classifier`, :func:`param_grid`, :func:`tune`, :func:`fit_classifiers`,
  :func:`predict_scores`).
- Radscores: the papers' "Radscore = intercept + coefficient × feature ..." from a fitted linear
  model (:func:`radscore_coefficients`, :func:`radscore_formula`, :func:`radscore`) and the
  per-patient mean over vertebrae (:func:`aggregate_by_patient`).
- Evaluation that refits the *whole* pipeline (selection included) wherever labels are used:
  :func:`split_by_patient`, :func:`cv_predict`, :func:`nested_cv`, :func:`permutation_test`.
- :func:`make_radiomics_pipeline` builds ``scaler → filters → selector → classifier`` in one call.

References
----------
- Ojala M, Garriga GC. Permutation tests for studying classifier performance. JMLR 2010.
- Varma S, Simon R. Bias in error estimation when using cross-validation for model selection.
  BMC Bioinformatics 2006 (nested CV).
- Ambroise C, McLachlan GJ. Selection bias in gene extraction on the basis of microarray
  gene-expression data. PNAS 2002 (selection outside CV inflates accuracy).
"""
from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from vcfnb.parallel import pmap
from vcfnb import selection as sel
from vcfnb.selection import RNGLike, _random_state

__all__ = [
    "CLASSIFIERS",
    "make_classifier",
    "param_grid",
    "tune",
    "fit_classifiers",
    "predict_scores",
    "radscore_coefficients",
    "radscore_formula",
    "radscore",
    "aggregate_by_patient",
    "split_by_patient",
    "cv_predict",
    "cv_fit",
    "cv_splitter",
    "CVFit",
    "NestedCVResult",
    "nested_cv",
    "PermutationResult",
    "permutation_test",
    "make_radiomics_pipeline",
]

CLASSIFIERS: tuple[str, ...] = (
    "LR", "SVM", "KNN", "RandomForest", "ExtraTrees", "XGBoost", "LightGBM", "MLP",
)
_ALIASES = {name.lower(): name for name in CLASSIFIERS}


def _canonical(name: str) -> str:
    key = str(name).lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    return _ALIASES[key]


# --------------------------------------------------------------------------------------------
# classifiers
# --------------------------------------------------------------------------------------------
def make_classifier(name: str, random_state: int | None = 0) -> BaseEstimator:
    """An unfitted classifier of seed 001 with quiet, single-threaded, deterministic settings.

    Parameters
    ----------
    name : str
        One of :data:`CLASSIFIERS` (case-insensitive).
    random_state : int, optional
        Seed for the stochastic ones.

    Returns
    -------
    estimator
        Every one has ``predict_proba``. ``SVM`` is ``CalibratedClassifierCV(SVC(),
        ensemble=False)`` (Platt scaling; scikit-learn's replacement for ``SVC(probability=True)``),
        so its grid keys start with ``estimator__``.

    Examples
    --------
    >>> make_classifier("ExtraTrees", random_state=0).n_jobs
    1
    """
    name = _canonical(name)
    rs = random_state
    if name == "LR":
        return LogisticRegression(C=1.0, max_iter=5000)
    if name == "SVM":
        return CalibratedClassifierCV(SVC(kernel="rbf", C=1.0, random_state=rs),
                                      method="sigmoid", cv=5, ensemble=False)
    if name == "KNN":
        return KNeighborsClassifier(n_neighbors=5)
    if name == "RandomForest":
        return RandomForestClassifier(n_estimators=200, random_state=rs, n_jobs=1)
    if name == "ExtraTrees":
        return ExtraTreesClassifier(n_estimators=200, random_state=rs, n_jobs=1)
    if name == "XGBoost":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, subsample=1.0,
                             random_state=rs, n_jobs=1, verbosity=0, eval_metric="logloss",
                             tree_method="exact")
    if name == "LightGBM":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(n_estimators=100, num_leaves=7, learning_rate=0.1,
                              min_child_samples=5, random_state=rs, n_jobs=1, verbose=-1,
                              deterministic=True, force_col_wise=True)
    return MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-3, max_iter=2000, random_state=rs)


_GRIDS: dict[str, dict[str, list]] = {
    "LR": {"C": [0.01, 0.1, 1.0, 10.0]},
    "SVM": {"estimator__C": [0.1, 1.0, 10.0], "estimator__kernel": ["linear", "rbf"]},
    "KNN": {"n_neighbors": [3, 5, 9, 15], "weights": ["uniform", "distance"]},
    "RandomForest": {"max_depth": [3, None], "min_samples_leaf": [1, 5]},
    "ExtraTrees": {"max_depth": [3, None], "min_samples_leaf": [1, 5]},
    "XGBoost": {"max_depth": [2, 4], "learning_rate": [0.05, 0.2]},
    "LightGBM": {"num_leaves": [3, 7], "learning_rate": [0.05, 0.2]},
    "MLP": {"hidden_layer_sizes": [(16,), (64,)], "alpha": [1e-3, 1e-1]},
}


def param_grid(name: str, prefix: str = "") -> dict[str, list]:
    """The small default grid of classifier ``name`` (keys prefixed, e.g. ``"clf__"``).

    Examples
    --------
    >>> param_grid("LR", prefix="lr__")
    {'lr__C': [0.01, 0.1, 1.0, 10.0]}
    """
    return {prefix + k: list(v) for k, v in _GRIDS[_canonical(name)].items()}


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*X does not have valid feature names.*")
    return ctx


def tune(name: str, X: Any, y: Any, *, cv: int = 5, rng: RNGLike = None,
         grid: Mapping[str, Sequence] | None = None, scoring: str = "roc_auc",
         n_jobs: int = 1) -> BaseEstimator:
    """Tune classifier ``name`` by grid search with stratified ``cv``-fold CV; refit on all rows.

    Parameters
    ----------
    name : str
        Classifier name (see :data:`CLASSIFIERS`).
    X, y : training rows and binary labels.
    cv : int
        Inner stratified folds (shuffled, seeded from ``rng``).
    rng : int, Generator or None
        Seeds the folds and the classifier.
    grid : mapping, optional
        Overrides :func:`param_grid`.
    scoring : str
    n_jobs : int

    Returns
    -------
    estimator
        ``GridSearchCV.best_estimator_`` fitted on all of ``X, y`` (the chosen settings are in
        its ``get_params()``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> tune("LR", X, y, rng=0).C in (0.01, 0.1, 1.0, 10.0)
    True
    """
    rs = _random_state(rng)
    est = make_classifier(name, random_state=rs)
    search = GridSearchCV(est, dict(grid) if grid is not None else param_grid(name),
                          scoring=scoring, cv=StratifiedKFold(cv, shuffle=True, random_state=rs),
                          n_jobs=n_jobs, refit=True, error_score="raise")
    ctx = _quiet()
    try:
        search.fit(X, np.asarray(y))
    finally:
        ctx.__exit__(None, None, None)
    return search.best_estimator_


def fit_classifiers(X_train: Any, y_train: Any, names: Sequence[str] | None = None, *,
                    cv: int = 5, rng: RNGLike = None,
                    grids: Mapping[str, Mapping[str, Sequence]] | None = None,
                    tuned: bool = True, n_jobs: int = 1) -> dict[str, BaseEstimator]:
    """Fit several classifiers on the training rows (each tuned by inner CV unless ``tuned=False``).

    Returns a dict ``name → fitted estimator`` in the order of ``names`` (default: all eight).
    Every classifier gets the same int seed derived from ``rng``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> sorted(fit_classifiers(X, y, ["LR", "KNN"], rng=0))
    ['KNN', 'LR']
    """
    names = list(CLASSIFIERS if names is None else names)
    rs = _random_state(rng)
    out: dict[str, BaseEstimator] = {}
    for name in names:
        if tuned:
            grid = None if grids is None else grids.get(name)
            out[name] = tune(name, X_train, y_train, cv=cv, rng=rs, grid=grid, n_jobs=n_jobs)
        else:
            ctx = _quiet()
            try:
                out[name] = make_classifier(name, random_state=rs).fit(X_train, np.asarray(y_train))
            finally:
                ctx.__exit__(None, None, None)
    return out


def _positive_score(est: Any, X: Any) -> np.ndarray:
    if hasattr(est, "predict_proba"):
        return np.asarray(est.predict_proba(X))[:, 1]
    return np.asarray(est.decision_function(X)).ravel()


def predict_scores(models: Mapping[str, Any], X: Any) -> pd.DataFrame:
    """Positive-class probability (or decision value) of every model: one column per model.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(40, 2)); y = (X[:, 0] > 0).astype(int)
    >>> predict_scores({"LR": make_classifier("LR").fit(X, y)}, X).shape
    (40, 1)
    """
    index = X.index if isinstance(X, pd.DataFrame) else None
    ctx = _quiet()
    try:
        cols = {name: _positive_score(m, X) for name, m in models.items()}
    finally:
        ctx.__exit__(None, None, None)
    return pd.DataFrame(cols, index=index)


# --------------------------------------------------------------------------------------------
# radscore
# --------------------------------------------------------------------------------------------
def _linear_terms(model: Any, feature_names: Sequence[str] | None) -> tuple[float, pd.Series]:
    """(intercept, coefficient Series) of a linear model, LassoSelector or pipeline."""
    if isinstance(model, sel.LassoSelector):
        return float(model.intercept_), model.coef_.astype(float).copy()
    names = None if feature_names is None else [str(f) for f in feature_names]
    if hasattr(model, "steps"):  # a Pipeline: last step linear, names from the steps before it
        head, last = model[:-1], model[-1]
        if names is None:
            try:
                names = [str(f) for f in head.get_feature_names_out()]
            except Exception:  # noqa: BLE001 - fall back to the last step's own names
                names = None
        model = last
    if isinstance(model, sel.LassoSelector):
        return float(model.intercept_), model.coef_.astype(float).copy()
    if not hasattr(model, "coef_") or not hasattr(model, "intercept_"):
        raise TypeError(
            f"{type(model).__name__} is not a fitted linear model (needs coef_ and intercept_)"
        )
    coef = np.asarray(model.coef_, dtype=float)
    if coef.ndim == 2 and coef.shape[0] != 1:
        raise ValueError("radscore needs a binary linear model (one row of coefficients)")
    coef = coef.ravel()
    if names is None:
        names = [str(f) for f in getattr(model, "feature_names_in_", [])] or [
            f"x{i}" for i in range(coef.size)]
    if len(names) != coef.size:
        raise ValueError(f"{len(names)} feature names for {coef.size} coefficients")
    intercept = float(np.ravel(model.intercept_)[0]) if np.size(model.intercept_) else 0.0
    return intercept, pd.Series(coef, index=pd.Index(names, name="feature"), name="coef")


def radscore_coefficients(model: Any, feature_names: Sequence[str] | None = None, *,
                          scaler: Any = None, drop_zero: bool = True) -> pd.DataFrame:
    """Intercept and coefficients of a fitted linear radscore model as a table.

    Parameters
    ----------
    model : fitted linear model
        A ``LogisticRegression`` (or any estimator with ``coef_``/``intercept_``), a fitted
        :class:`vcfnb.selection.LassoSelector` (the papers' LASSO radscore), or a ``Pipeline``
        ending in one (names from the preceding steps' ``get_feature_names_out``).
    feature_names : sequence of str, optional
        Names of the model's inputs when the model does not carry them.
    scaler : fitted StandardScaler or MaxAbsScaler, optional
        When given, coefficients are back-transformed to the raw (unscaled) feature units:
        ``b_raw = b / scale`` and ``intercept_raw = intercept - Σ b·mean/scale``. The scaler must
        have been fitted on a DataFrame containing the model's features.
    drop_zero : bool
        Leave out zero coefficients.

    Returns
    -------
    DataFrame
        Columns ``term, coefficient``; the first row is ``(Intercept)``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> X = pd.DataFrame({"a": [0, 1, 2, 3, 4, 5.0], "b": [1, 0, 1, 0, 1, 1.0]})
    >>> m = LogisticRegression().fit(X, [0, 0, 1, 0, 1, 1])
    >>> radscore_coefficients(m)["term"].tolist()
    ['(Intercept)', 'a', 'b']
    """
    intercept, coef = _linear_terms(model, feature_names)
    if scaler is not None:
        names_in = [str(f) for f in getattr(scaler, "feature_names_in_", [])]
        if not names_in:
            raise ValueError(
                "scaler must be fitted on a DataFrame so features can be matched by name")
        pos = pd.Index(names_in)
        missing = [f for f in coef.index if f not in pos]
        if missing:
            raise ValueError(f"features not seen by the scaler: {missing[:10]}")
        idx = pos.get_indexer(coef.index)
        scale = np.asarray(getattr(scaler, "scale_", None) if hasattr(scaler, "scale_")
                           else scaler.max_abs_, dtype=float)[idx]
        scale = np.where(scale == 0, 1.0, scale)
        mean = getattr(scaler, "mean_", None)
        mean = np.zeros(idx.size) if mean is None else np.asarray(mean, dtype=float)[idx]
        raw = coef.to_numpy() / scale
        intercept = intercept - float(np.sum(raw * mean))
        coef = pd.Series(raw, index=coef.index, name="coef")
    if drop_zero:
        coef = coef[coef != 0]
    return pd.DataFrame({
        "term": ["(Intercept)", *[str(t) for t in coef.index]],
        "coefficient": [intercept, *coef.to_numpy()],
    })


def _coef_text(c: float, digits: int) -> str:
    """|c| with ``digits`` decimals, or ``digits`` significant digits when those decimals would
    print a non-zero coefficient as 0 (a radscore term of 1e-4 must not read "0.000").

    >>> _coef_text(0.45678, 3), _coef_text(0.000123456, 3), _coef_text(0.0, 3)
    ('0.457', '0.000123', '0.000')
    """
    c = abs(float(c))
    return f"{c:.{digits}g}" if c != 0 and round(c, digits) == 0 else f"{c:.{digits}f}"


def radscore_formula(model: Any, feature_names: Sequence[str] | None = None, *,
                     scaler: Any = None, name: str = "Radscore", digits: int = 3) -> str:
    """The printed radscore formula, e.g. ``"Radscore = 0.123 + 0.456 × a − 0.789 × b"``.

    Same inputs as :func:`radscore_coefficients`; terms in the model's feature order, minus signs
    as "−", coefficients rounded to ``digits`` (significant digits for a non-zero coefficient
    that would round to 0).

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"a": [0, 1, 2, 3, 4, 5.0], "b": [1, 0, 1, 0, 1, 1.0]})
    >>> m = LogisticRegression().fit(X, [0, 0, 1, 0, 1, 1])
    >>> radscore_formula(m).startswith("Radscore = ")
    True
    """
    table = radscore_coefficients(model, feature_names, scaler=scaler)
    b0 = float(table["coefficient"].iloc[0])
    parts = [f"{name} = {b0:.{digits}f}".replace("-", "−")]
    for term, b in zip(table["term"].iloc[1:], table["coefficient"].iloc[1:]):
        sign = "−" if b < 0 else "+"
        parts.append(f"{sign} {_coef_text(b, digits)} × {term}")
    return " ".join(parts)


def radscore(model: Any, X: Any, *, name: str = "radscore") -> pd.Series:
    """The radscore (linear predictor, log-odds scale) of every row of ``X``.

    ``model`` as in :func:`radscore_coefficients`; a LassoSelector uses its selected columns of
    ``X`` (a DataFrame with those names), other models their ``decision_function``.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"a": [0, 1, 2, 3, 4, 5.0]})
    >>> m = LogisticRegression().fit(X, [0, 0, 1, 0, 1, 1])
    >>> expected = m.intercept_[0] + m.coef_[0, 0] * X["a"]
    >>> bool(np.allclose(radscore(m, X), expected))
    True
    """
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(X))
    if isinstance(model, sel.LassoSelector):
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(np.asarray(X), columns=sel._check_feature_names_in(model, None))
        cols = list(model.coef_.index)
        values = model.intercept_ + X.loc[:, cols].to_numpy(dtype=float) @ model.coef_.to_numpy()
    else:
        last = model[-1] if hasattr(model, "steps") else model
        if isinstance(last, sel.LassoSelector):
            Xt = model[:-1].transform(X) if hasattr(model, "steps") else X
            return radscore(last, Xt, name=name).set_axis(index)
        values = np.asarray(model.decision_function(X), dtype=float).ravel()
    return pd.Series(values, index=index, name=name)


def aggregate_by_patient(scores: Any, patient_ids: Any, how: str | Callable = "mean") -> pd.Series:
    """Combine ROI-level scores into one per patient (seeds 002/003: mean over vertebrae).

    Parameters
    ----------
    scores : array-like or Series
        One score per ROI row.
    patient_ids : array-like
        Patient of each row (positional, same length).
    how : {"mean", "median", "max", "min"} or callable
        Aggregation.

    Returns
    -------
    Series
        Indexed by ``patient_id`` (sorted), named like ``scores``.

    Examples
    --------
    >>> aggregate_by_patient([1.0, 3.0, 5.0], ["p1", "p1", "p2"]).tolist()
    [2.0, 5.0]
    """
    values = np.asarray(scores, dtype=float).ravel()
    ids = np.asarray(patient_ids).ravel()
    if values.size != ids.size:
        raise ValueError(f"{values.size} scores but {ids.size} patient ids")
    name = scores.name if isinstance(scores, pd.Series) else "score"
    out = pd.Series(values).groupby(pd.Series(ids, name="patient_id")).agg(how)
    out.name = name
    return out


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
def _patient_labels(table: pd.DataFrame, label: str, patient_col: str) -> pd.Series:
    if patient_col in table.columns:
        ids = table[patient_col]
    elif table.index.name == patient_col:
        ids = table.index.to_series()
    else:
        raise KeyError(f"no column or index named {patient_col!r}")
    if label not in table.columns:
        raise KeyError(f"label column {label!r} not in table")
    per = pd.DataFrame({"pid": ids.to_numpy(), "y": table[label].to_numpy()})
    n_lab = per.groupby("pid")["y"].nunique()
    bad = n_lab[n_lab > 1].index.tolist()
    if bad:
        raise ValueError(f"label {label!r} differs between rows of patient(s) {bad[:10]}")
    return per.groupby("pid", sort=True)["y"].first()


def split_by_patient(table: pd.DataFrame, label: str = "outcome", *, test_size: float = 0.3,
                     rng: RNGLike = None, patient_col: str = "patient_id"
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split by patient: all rows of a patient land on the same side.

    Patients (one label each) are split with ``train_test_split(stratify=label,
    test_size=test_size, random_state=...)``; with ``rng`` an int that int is the random_state,
    so on a one-row-per-patient ``cases`` table this is exactly STUDIES.md's "7:3 stratified
    split". Works on ``cases`` (one row per patient) and ``rois`` (several rows per patient).

    Returns
    -------
    (train, test) : tuple of DataFrame
        Row subsets of ``table`` in its original order.

    Examples
    --------
    >>> import pandas as pd
    >>> rois = pd.DataFrame({"patient_id": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6],
    ...                      "outcome": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]})
    >>> train, test = split_by_patient(rois, test_size=1/3, rng=0)
    >>> set(train.patient_id) & set(test.patient_id)
    set()
    """
    per = _patient_labels(table, label, patient_col)
    counts = per.value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError(f"cannot split by patient: column {label!r} has "
                         f"{'a single class' if len(counts) < 2 else 'a class with one patient'} "
                         f"({counts.to_dict()}); a stratified split needs at least two patients "
                         "of each class")
    train_ids, test_ids = train_test_split(
        per.index.to_numpy(), test_size=test_size, stratify=per.to_numpy(),
        random_state=_random_state(rng))
    ids = table[patient_col] if patient_col in table.columns else table.index.to_series()
    in_test = ids.isin(set(test_ids)).to_numpy()
    return table.loc[~in_test], table.loc[in_test]


def _fresh(estimator: Any) -> Any:
    """A fresh unfitted copy: clone an estimator, or call a zero-argument factory."""
    if isinstance(estimator, BaseEstimator) or hasattr(estimator, "get_params"):
        return clone(estimator)
    if callable(estimator):
        return estimator()
    raise TypeError("expected an estimator or a zero-argument factory returning one")


def _splitter(cv: Any, rs: int, groups: Any):
    if not isinstance(cv, int):
        return cv
    if groups is not None:
        return StratifiedGroupKFold(n_splits=cv, shuffle=True, random_state=rs)
    return StratifiedKFold(n_splits=cv, shuffle=True, random_state=rs)


def _take(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if isinstance(X, (pd.DataFrame, pd.Series)) else np.asarray(X)[idx]


def _fit_score_fold(estimator, X, y, train, test, keep: bool = False):
    est = _fresh(estimator)
    ctx = _quiet()
    try:
        est.fit(_take(X, train), y[train])
        s = _positive_score(est, _take(X, test))
        return (s, est) if keep else s
    finally:
        ctx.__exit__(None, None, None)


def cv_splitter(cv: int, *, rng: RNGLike = None, grouped: bool = False):
    """The shuffled stratified k-fold splitter :func:`cv_predict` builds from an int.

    Give the same splitter to :func:`cv_predict` (or :func:`cv_fit`) and to
    :func:`permutation_test` so that the permutation test's observed AUC is the reported one.
    ``grouped``: ``StratifiedGroupKFold`` (pass ``groups`` to the CV functions).

    Examples
    --------
    >>> cv_splitter(5, rng=0).get_n_splits()
    5
    """
    return _splitter(int(cv), _random_state(rng), True if grouped else None)


@dataclass
class CVFit:
    """Result of :func:`cv_fit`: out-of-fold ``predictions`` (``y_true, score, fold``) and
    the fitted ``estimators`` of the folds (in fold order)."""

    predictions: pd.DataFrame
    estimators: list = field(repr=False)


def cv_fit(estimator: Any, X: Any, y: Any, *, cv: Any = 10, rng: RNGLike = None,
           groups: Any = None, n_jobs: int = 1) -> CVFit:
    """:func:`cv_predict` that also keeps each fold's fitted estimator (e.g. to report what a
    selection step chose in every fold). Same arguments, same predictions.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); y = (X[:, 0] > 0).astype(int)
    >>> len(cv_fit(make_classifier("LR"), X, y, cv=5, rng=0).estimators)
    5
    """
    return _cv(estimator, X, y, cv=cv, rng=rng, groups=groups, n_jobs=n_jobs, keep=True)


def cv_predict(estimator: Any, X: Any, y: Any, *, cv: Any = 10, rng: RNGLike = None,
               groups: Any = None, n_jobs: int = 1) -> pd.DataFrame:
    """Out-of-fold scores: the whole ``estimator`` (pipeline) is refitted in every fold.

    Parameters
    ----------
    estimator : estimator, Pipeline, or zero-argument factory
        Cloned (or built) afresh for each fold.
    X, y : rows and binary labels.
    cv : int or CV splitter
        An int gives shuffled ``StratifiedKFold`` (``StratifiedGroupKFold`` with ``groups``)
        seeded from ``rng``.
    groups : array-like, optional
        Patient of each row; rows of one patient stay in the same fold.
    n_jobs : int
        Folds in parallel.

    Returns
    -------
    DataFrame
        Index = rows of ``X``; columns ``y_true, score, fold``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); y = (X[:, 0] > 0).astype(int)
    >>> cv_predict(make_classifier("LR"), X, y, cv=5, rng=0).columns.tolist()
    ['y_true', 'score', 'fold']
    """
    return _cv(estimator, X, y, cv=cv, rng=rng, groups=groups, n_jobs=n_jobs,
               keep=False).predictions


def _cv(estimator, X, y, *, cv, rng, groups, n_jobs, keep) -> CVFit:
    y_arr = np.asarray(y).ravel()
    y01 = sel._binary_labels(y_arr)
    rs = _random_state(rng)
    splitter = _splitter(cv, rs, groups)
    splits = list(splitter.split(np.zeros((y01.size, 1)), y01, groups))
    out = pmap(lambda s: _fit_score_fold(estimator, X, y_arr, s[0], s[1], keep), splits,
               n_jobs=n_jobs)
    scores, fitted = ([o[0] for o in out], [o[1] for o in out]) if keep else (out, [])
    score = np.full(y01.size, np.nan)
    fold = np.full(y01.size, -1)
    for k, ((_, te), s) in enumerate(zip(splits, scores)):
        score[te] = s
        fold[te] = k
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(y01.size)
    return CVFit(pd.DataFrame({"y_true": y01, "score": score, "fold": fold}, index=index), fitted)


@dataclass
class NestedCVResult:
    """Result of :func:`nested_cv`.

    Attributes
    ----------
    predictions : DataFrame
        Out-of-fold ``y_true, score, fold`` (outer folds).
    folds : DataFrame
        One row per outer fold: ``fold, auc, best_params, inner_score``.
    auc : float
        AUC of the pooled out-of-fold scores.
    """

    predictions: pd.DataFrame
    folds: pd.DataFrame
    auc: float


def nested_cv(estimator: Any, grid: Mapping[str, Sequence], X: Any, y: Any, *, outer_cv: int = 5,
              inner_cv: int = 5, rng: RNGLike = None, groups: Any = None,
              scoring: str = "roc_auc", n_jobs: int = 1) -> NestedCVResult:
    """Nested CV: hyper-parameters tuned by inner CV inside every outer training fold.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> res = nested_cv(make_classifier("LR"), {"C": [0.1, 1.0]}, X, y,
    ...                 outer_cv=3, inner_cv=3, rng=0)
    >>> len(res.folds)
    3
    """
    y_arr = np.asarray(y).ravel()
    y01 = sel._binary_labels(y_arr)
    rs = _random_state(rng)
    splits = list(_splitter(outer_cv, rs, groups).split(np.zeros((y01.size, 1)), y01, groups))

    def one(k, train, test):
        inner = _splitter(inner_cv, rs + k + 1, groups)
        search = GridSearchCV(_fresh(estimator), dict(grid), scoring=scoring, cv=inner, refit=True)
        ctx = _quiet()
        try:
            g = None if groups is None else np.asarray(groups)[train]
            search.fit(_take(X, train), y_arr[train], groups=g)
            s = _positive_score(search.best_estimator_, _take(X, test))
        finally:
            ctx.__exit__(None, None, None)
        return s, search.best_params_, float(search.best_score_)

    results = pmap(lambda item: one(item[0], *item[1]), list(enumerate(splits)), n_jobs=n_jobs)
    score = np.full(y01.size, np.nan)
    fold = np.full(y01.size, -1)
    rows = []
    for k, ((_, te), (s, params, inner)) in enumerate(zip(splits, results)):
        score[te] = s
        fold[te] = k
        auc = roc_auc_score(y01[te], s) if np.unique(y01[te]).size == 2 else np.nan
        rows.append({"fold": k, "auc": auc, "best_params": params, "inner_score": inner})
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(y01.size)
    pred = pd.DataFrame({"y_true": y01, "score": score, "fold": fold}, index=index)
    return NestedCVResult(pred, pd.DataFrame(rows), float(roc_auc_score(y01, score)))


@dataclass
class PermutationResult:
    """Result of :func:`permutation_test`.

    Attributes
    ----------
    observed_auc : float
        AUC of the pipeline on the real labels.
    null_auc : ndarray
        AUC of each run on permuted training labels.
    p_value : float
        ``(1 + #{null >= observed}) / (1 + n_permutations)``.
    design : str
        ``"train_test"``, ``"cv"`` or ``"custom"``.
    refit_warnings : dict
        vcfnb's own notices raised while refitting on shuffled labels (e.g. ``LassoSelector``:
        fewer features than ``min_features`` at the CV lambda, a smaller lambda used), by the
        class that raised them: the number of permutations in which each occurred. They are
        counted, and said once, instead of printed once per refit.
    """

    observed_auc: float
    null_auc: np.ndarray = field(repr=False)
    p_value: float
    design: str
    refit_warnings: dict = field(default_factory=dict, repr=False)

    @property
    def n_permutations(self) -> int:
        return int(self.null_auc.size)

    def summary(self) -> pd.DataFrame:
        """One-row table: ``design, observed_auc, null_mean, null_sd, null_q95, n_permutations,
        p_value``."""
        null = self.null_auc
        nan = float("nan")
        return pd.DataFrame([{
            "design": self.design, "observed_auc": self.observed_auc,
            "null_mean": float(np.mean(null)) if null.size else nan,
            "null_sd": float(np.std(null, ddof=1)) if null.size > 1 else nan,
            "null_q95": float(np.quantile(null, 0.95)) if null.size else nan,
            "n_permutations": self.n_permutations, "p_value": self.p_value,
        }])


def _permuted(y: np.ndarray, groups: Any, gen: np.random.Generator) -> np.ndarray:
    """Shuffle labels; with groups, shuffle patient labels and give each row its patient's."""
    if groups is None:
        return gen.permutation(y)
    g = np.asarray(groups).ravel()
    uniq, inv = np.unique(g, return_inverse=True)
    per = np.empty(uniq.size, dtype=y.dtype)
    per[inv] = y  # labels are constant within a patient (checked by the caller)
    return gen.permutation(per)[inv]


def permutation_test(estimator: Any, X: Any, y: Any, *, X_test: Any = None, y_test: Any = None,
                     cv: Any = 10, evaluate: Callable[[Any, Any, Any], float] | None = None,
                     n_permutations: int = 100, rng: RNGLike = None, groups: Any = None,
                     n_jobs: int = 1, scheduler: Any = None,
                     progress: bool = False) -> PermutationResult:
    """Whole-pipeline label-permutation test.

    The complete ``estimator`` (scaling, filters, selection and classifier — a Pipeline, or a
    zero-argument factory returning one) is refitted on shuffled training labels
    ``n_permutations`` times. A pipeline that leaks (e.g. selection fitted on all rows) shows a
    null distribution centred above 0.5.

    Designs:

    - **train/test** (``X_test``, ``y_test`` given): fit on ``X`` with (shuffled) ``y``, AUC on the
      untouched test rows;
    - **CV** (default): AUC of pooled out-of-fold scores of :func:`cv_predict` on (shuffled) ``y``
      (same fold seed for every run);
    - **custom**: ``evaluate(fresh_estimator, X, y_labels) -> float`` does everything.

    Parameters
    ----------
    groups : array-like, optional
        Patient of each training row: labels are shuffled between patients and, in the CV design,
        folds keep patients together.
    n_jobs : int
        Permutations in parallel worker processes (:func:`vcfnb.parallel.pmap`); results do
        not depend on it, nor on running on a Dask cluster (``scheduler``).
    scheduler : str or dask.distributed.Client, optional
        Run the permutations on a Dask cluster (default ``$VCFNB_DASK_SCHEDULER`` when set).
    progress : bool
        Show a progress bar over the permutations.

    Returns
    -------
    PermutationResult

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> res = permutation_test(make_classifier("LR"), X, y, cv=3, n_permutations=9, rng=0)
    >>> res.p_value
    0.1
    """
    y_arr = np.asarray(y).ravel()
    y01 = sel._binary_labels(y_arr)
    if groups is not None:
        _patient_labels(pd.DataFrame({"patient_id": np.asarray(groups).ravel(), "y": y01}),
                        "y", "patient_id")
    gen = np.random.default_rng(rng)
    cv_seed = int(gen.integers(0, 2**31 - 1))
    perm_seeds = gen.spawn(int(n_permutations)) if hasattr(gen, "spawn") else [
        np.random.default_rng(s) for s in gen.integers(0, 2**31 - 1, int(n_permutations))]

    if evaluate is not None:
        design = "custom"

        def run(labels):
            return float(evaluate(_fresh(estimator), X, labels))
    elif X_test is not None:
        if y_test is None:
            raise ValueError("X_test given without y_test")
        design = "train_test"
        yt = sel._binary_labels(y_test)

        def run(labels):
            est = _fresh(estimator)
            ctx = _quiet()
            try:
                est.fit(X, labels)
                return float(roc_auc_score(yt, _positive_score(est, X_test)))
            finally:
                ctx.__exit__(None, None, None)
    else:
        design = "cv"

        def run(labels):
            pred = cv_predict(estimator, X, labels, cv=cv, rng=cv_seed, groups=groups)
            return float(roc_auc_score(pred["y_true"], pred["score"]))

    observed = run(y01)
    out = pmap(functools.partial(_counting_notices, run),
               [_permuted(y01, groups, g) for g in perm_seeds], n_jobs=n_jobs,
               scheduler=scheduler, desc="permutations", progress=progress)
    null = np.array([auc for auc, _ in out], dtype=float)
    counts: dict[str, int] = {}
    for _, kinds in out:
        for k in kinds:
            counts[k] = counts.get(k, 0) + 1
    if counts:
        warnings.warn("permutation test: on shuffled labels, " + "; ".join(
            f"{k} fell back to its rule in {c} of {null.size} refits" for k, c in
            sorted(counts.items())) + " (the same rules as the reported fit, which says its "
            "own)", UserWarning, stacklevel=2)
    p = (1.0 + np.sum(null >= observed)) / (1.0 + null.size)
    return PermutationResult(float(observed), null, float(p), design, counts)


_NOTICE = re.compile(r"^([A-Z][A-Za-z0-9]+): ")


def _counting_notices(run: Callable[[np.ndarray], float], labels: np.ndarray
                      ) -> tuple[float, list[str]]:
    """``run(labels)`` with vcfnb's own notices (UserWarnings "<Class>: ...") collected by class
    instead of printed; every other warning is passed on unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        auc = run(labels)
    kinds: list[str] = []
    for w in caught:
        m = _NOTICE.match(str(w.message)) if issubclass(w.category, UserWarning) else None
        if m and m.group(1) not in kinds:
            kinds.append(m.group(1))
        elif not m:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return auc, kinds


# --------------------------------------------------------------------------------------------
# pipeline builder
# --------------------------------------------------------------------------------------------
_STEP_FACTORIES: dict[str, Callable[..., Any]] = {
    "oversample": sel.RandomOverSampler,
    "zscore": sel.StandardScaler,
    "standard": sel.StandardScaler,
    "maxabs": sel.MaxAbsScaler,
    "univariate": sel.UnivariateFilter,
    "correlation": sel.CorrelationFilter,
    "mrmr": sel.MRMRSelector,
    "lasso": sel.LassoSelector,
    "rfe": sel.RFESelector,
    "sfs": sel.SFSSelector,
}


def make_radiomics_pipeline(steps: Sequence[Any], *, rng: RNGLike = None) -> sel.Pipeline:
    """Build ``[oversample →] scaler → filters → selector → classifier`` as one pipeline.

    Parameters
    ----------
    steps : sequence
        Each item is a step name, a ``(name, params)`` tuple, or a ready estimator. Names:
        ``oversample`` (imblearn ``RandomOverSampler``, fit time only), ``zscore``/``standard``,
        ``maxabs``, ``univariate``, ``correlation``, ``mrmr``, ``lasso``, ``rfe``, ``sfs`` (the
        :mod:`vcfnb.selection` classes) and the classifier names of :data:`CLASSIFIERS`.
    rng : int, Generator or None
        Every step with a ``random_state`` parameter not set in ``params`` gets an int drawn
        from it (an int ``rng`` is used as is).

    Returns
    -------
    imblearn.pipeline.Pipeline
        An imbalanced-learn Pipeline (a scikit-learn Pipeline that also accepts samplers, which
        act on training rows only), with ``set_output(transform="pandas")`` so feature names
        flow through. Step names are the given names (lower case; repeats get ``_2``, ...).

    Examples
    --------
    >>> pipe = make_radiomics_pipeline(
    ...     ["zscore", ("univariate", {"alpha": 0.05}), ("lasso", {"cv": 5}), "LR"], rng=0)
    >>> [name for name, _ in pipe.steps]
    ['zscore', 'univariate', 'lasso', 'lr']
    """
    rs_gen = np.random.default_rng(rng)
    fixed = _random_state(rng) if isinstance(rng, int) and not isinstance(rng, bool) else None
    built: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for item in steps:
        if isinstance(item, tuple):
            key, params = item
            params = dict(params)
        else:
            key, params = item, {}
        rs = fixed if fixed is not None else int(rs_gen.integers(0, 2**31 - 1))
        if isinstance(key, str):
            low = key.lower()
            if low in _STEP_FACTORIES:
                est = _STEP_FACTORIES[low]()
            elif low in _ALIASES:
                est = make_classifier(low, random_state=rs)
            else:
                raise ValueError(
                    f"unknown pipeline step {key!r}; choose from "
                    f"{', '.join([*_STEP_FACTORIES, *CLASSIFIERS])}"
                )
            name = low
        else:
            est = clone(key)
            name = type(key).__name__.lower()
        if "random_state" in est.get_params(deep=False) and "random_state" not in params:
            if est.get_params(deep=False)["random_state"] is None or isinstance(key, str):
                params["random_state"] = rs
        if params:
            est.set_params(**params)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        built.append((name, est))
    pipe = sel.Pipeline(built)
    pipe.set_output(transform="pandas")
    return pipe


# --------------------------------------------------------------------------------------------
# one radscore model (osteoporosis and ovf) and its probability link
# --------------------------------------------------------------------------------------------
_SCALERS = ("zscore", "maxabs", "minmax")


def _usable_columns(X: pd.DataFrame) -> list[str]:
    """Columns of ``X`` that are finite in every row and not constant."""
    A = X.to_numpy(dtype=float)
    ok = np.isfinite(A).all(axis=0) & (np.nanmax(A, axis=0, initial=-np.inf)
                                       != np.nanmin(A, axis=0, initial=np.inf))
    return [c for c, k in zip(X.columns, ok) if k]


def _score_array(score: Any) -> np.ndarray:
    s = np.asarray(score, dtype=float)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(f"a score must be one value per row, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return s


class ProbabilityLink(ClassifierMixin, BaseEstimator):
    """Logistic regression of the outcome on one score: ``P(y=1) = expit(a + b · score)``.

    The papers turn a radscore into a probability this way ("the radiomic model established
    based on the radscores"). Fit it on **out-of-fold** scores of the training patients (e.g.
    the ``train_oof`` rows of the predictions table, or :func:`cv_predict` of the score model's
    ``decision_function``): fitted on the same rows that fitted the score, the link inherits the
    score's optimism and the probabilities come out over-confident on new patients (calibration
    slope < 1). :class:`RadscoreModel` therefore never fits a link itself; attach one with
    :meth:`RadscoreModel.set_link`.

    Parameters
    ----------
    C : float
        Inverse L2 penalty of the logistic regression; ``np.inf`` (default) = unpenalised.
    max_iter : int

    Attributes
    ----------
    intercept_, slope_ : float
        ``a`` and ``b``. ``estimator_`` : the fitted ``LogisticRegression``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.normal(size=200); y = (rng.random(200) < 1 / (1 + np.exp(-2 * s))).astype(int)
    >>> link = ProbabilityLink().fit(s, y)
    >>> bool(1.4 < link.slope_ < 2.8), link.predict_proba([0.0]).shape
    (True, (1, 2))
    """

    def __init__(self, C: float = np.inf, max_iter: int = 1000) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, score: Any, y: Any) -> ProbabilityLink:
        """Fit on one score per row (1-D, or one column) and binary labels."""
        s = _score_array(score)
        y01 = sel._binary_labels(y)
        self.classes_ = np.unique(np.asarray(y).ravel())
        self.estimator_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(
            s.reshape(-1, 1), y01)
        self.intercept_ = float(self.estimator_.intercept_[0])
        self.slope_ = float(self.estimator_.coef_[0, 0])
        return self

    def decision_function(self, score: Any) -> np.ndarray:
        """Log-odds ``a + b · score``."""
        check_is_fitted(self, "estimator_")
        return self.intercept_ + self.slope_ * _score_array(score)

    def predict_proba(self, score: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities (column 1: the positive class)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(_score_array(score).reshape(-1, 1))

    def predict(self, score: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(score)[:, 1] >= 0.5).astype(int)]


def _has_link(model: RadscoreModel) -> bool:
    return getattr(model, "link_", None) is not None


class _RadscoreOutputs:
    """What every radscore model derives from its ``radscore(X)``, ``name``, ``classes_`` and
    optional ``link_``: decision values, a one-column transform, link probabilities, labels."""

    def decision_function(self, X: Any) -> np.ndarray:
        """The radscore (log-odds scale of the LASSO model)."""
        return self.radscore(X)

    def transform(self, X: Any) -> pd.DataFrame:
        """The radscore as one column named ``name`` (for ``ColumnTransformer``/pipelines)."""
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame({self.name: self.radscore(X)}, index=index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([self.name], dtype=object)

    @available_if(_has_link)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities from the attached link (only after ``set_link``)."""
        return self.link_.predict_proba(self.radscore(X))

    def predict(self, X: Any) -> np.ndarray:
        """Class labels: link probability ≥ 0.5 with a link, else ``radscore > 0``."""
        if _has_link(self):
            pos = self.predict_proba(X)[:, 1] >= 0.5
        else:
            pos = self.radscore(X) > 0
        return self.classes_[pos.astype(int)]


class RadscoreModel(_RadscoreOutputs, ClassifierMixin, TransformerMixin, BaseEstimator):
    """Radscore: scaling → optional mRMR top ``k`` → LASSO logistic → linear score.

    The radscore is the LASSO logistic model's linear predictor on the scaled features,
    ``intercept + Σ coef × scaled feature`` -- the formula the papers print. Everything (column
    filter, scaler, mRMR, LASSO with its lambda CV) is fitted on the rows given to ``fit`` only,
    so refitting the model inside a CV fold or a permutation refits the whole chain. The class
    serves the osteoporosis (seed 002: z-score → LASSO) and OVF (seed 003: max-abs → mRMR 30 →
    LASSO, one model per compartment prefix) radscores:

    * seed 002 -- ``RadscoreModel(scaler="zscore", cv=10, rule="1se", scoring="deviance",
      n_lambdas=25, random_state=0)``;
    * seed 003 -- ``RadscoreModel(scaler="maxabs", k=30, prefix="cortical__", cv=10,
      rule="min", n_lambdas=40, lambda_min_ratio=0.01, tol=1e-3, max_iter=2000,
      name="radscore_cortical", random_state=0)``.

    **No probability link is fitted here.** ``decision_function``/``radscore`` return the score;
    ``predict_proba`` exists only after :meth:`set_link` attached a :class:`ProbabilityLink`
    fitted by the caller on out-of-fold scores. Without a link, ``predict`` is ``radscore > 0``
    (the LASSO model's own probability ≥ 0.5).

    Parameters
    ----------
    scaler : {"zscore", "maxabs", "minmax"} or None
        Feature scaling fitted on the training rows: z-score (``StandardScaler``, population
        SD), division by the maximum absolute value (``MaxAbsScaler``), ``(x - min) / range``
        (``MinMaxScaler``), or none. Coefficients are on this scale.
    k : int, optional
        mRMR pre-selection of ``k`` features (:class:`vcfnb.selection.MRMRSelector`) before the
        LASSO; None = no pre-selection.
    mrmr_order : {"ranking", "input"}
        Column order mRMR passes on (liblinear's result depends on it; the OVF study has always
        used ``"ranking"``).
    prefix : str, optional
        Use only the columns whose name starts with ``prefix`` (e.g. a compartment
        ``"cortical__"``).
    columns : sequence of str, optional
        Use only these columns (combined with ``prefix``: both must hold).
    drop_unusable : bool
        Leave out columns that are non-finite in any training row or constant there.
    lam, cv, rule, scoring, n_lambdas, lambda_min_ratio, solver, tol, thresh, max_iter,
    min_features, screening, compute_path, random_state :
        The LASSO (:class:`vcfnb.selection.LassoSelector`): fixed glmnet ``lam`` or lambda by
        ``cv``-fold CV with ``rule`` ("min"/"1se") on ``scoring`` ("roc_auc"/"deviance").
        Pass an int ``random_state``: with None, liblinear's random coordinate order makes the
        coefficients vary by ~1e-5 from one fit to the next.
    name : str
        Name of the single output column of ``transform``.

    Attributes
    ----------
    columns_ : list of str
        Input columns used (after ``prefix``/``columns``/``drop_unusable``).
    pipeline_ : Pipeline
        The fitted scaler → [mRMR →] LASSO chain.
    coef_ : Series
        Non-zero coefficients on the scaled features (index: the input column names), in the
        order LASSO saw them. ``intercept_`` : float.
    center_, scale_ : Series
        Per selected feature, ``scaled = (x - center) / scale`` (z-score: mean and SD; max-abs:
        0 and max |x|; min-max: min and range; none: 0 and 1).
    link_ : ProbabilityLink or None
        Set by :meth:`set_link`.

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(80, 12)), columns=[f"f{i}" for i in range(12)])
    >>> y = (X["f0"] + g.normal(size=80) > 0).astype(int)
    >>> m = RadscoreModel(cv=5, n_lambdas=20, compute_path=False, random_state=0).fit(X, y)
    >>> "f0" in m.coef_.index, m.transform(X).shape, hasattr(m, "predict_proba")
    (True, (80, 1), False)
    >>> oof = cv_predict(RadscoreModel(lam=0.05, random_state=0), X, y, cv=5, rng=0)
    >>> hasattr(m.set_link(ProbabilityLink().fit(oof["score"], oof["y_true"])), "predict_proba")
    True
    """

    def __init__(self, scaler: str | None = "zscore", k: int | None = None,
                 mrmr_order: str = "ranking", prefix: str | None = None,
                 columns: Sequence[str] | None = None, drop_unusable: bool = True,
                 lam: float | None = None, cv: int = 10, rule: str = "min",
                 scoring: str = "roc_auc", n_lambdas: int = 50,
                 lambda_min_ratio: float | None = None, solver: str = "liblinear",
                 tol: float | None = None, max_iter: int = 20000, min_features: int = 1,
                 screening: bool = True, compute_path: bool = True, thresh: float | None = None,
                 random_state: int | None = None, name: str = "radscore") -> None:
        self.scaler = scaler
        self.k = k
        self.mrmr_order = mrmr_order
        self.prefix = prefix
        self.columns = columns
        self.drop_unusable = drop_unusable
        self.lam = lam
        self.cv = cv
        self.rule = rule
        self.scoring = scoring
        self.n_lambdas = n_lambdas
        self.lambda_min_ratio = lambda_min_ratio
        self.solver = solver
        self.tol = tol
        self.thresh = thresh
        self.max_iter = max_iter
        self.min_features = min_features
        self.screening = screening
        self.compute_path = compute_path
        self.random_state = random_state
        self.name = name

    def _input_columns(self, X: pd.DataFrame) -> list[str]:
        cols = [c for c in X.columns
                if (self.prefix is None or str(c).startswith(self.prefix))
                and (self.columns is None or c in set(self.columns))]
        if self.columns is not None:
            missing = [c for c in self.columns if c not in X.columns]
            if missing:
                raise ValueError(f"columns not in X: {missing[:5]}")
        if not cols:
            raise ValueError(f"no input column (prefix={self.prefix!r}, columns given: "
                             f"{self.columns is not None})")
        if self.drop_unusable:
            cols = _usable_columns(X[cols])
            if not cols:
                raise ValueError("every input column is non-finite or constant on these rows")
        return cols

    def _scaler_step(self) -> Any:
        from sklearn.preprocessing import MinMaxScaler

        if self.scaler is None or self.scaler == "none":
            return "passthrough"
        factories = {"zscore": sel.StandardScaler, "maxabs": sel.MaxAbsScaler,
                     "minmax": MinMaxScaler}
        if self.scaler not in factories:
            raise ValueError(f"scaler must be one of {_SCALERS} or None, got {self.scaler!r}")
        return factories[self.scaler]()

    def fit(self, X: Any, y: Any, groups: Any = None) -> RadscoreModel:
        """Fit the whole chain on these rows (``X``: DataFrame of features; ``y``: 0/1).
        ``groups``: the patient of each row (several rows per patient): the LASSO's lambda CV
        keeps a patient's rows in one fold."""
        from sklearn.pipeline import Pipeline

        if self.mrmr_order not in ("ranking", "input"):
            raise ValueError(f"mrmr_order must be 'ranking' or 'input', got {self.mrmr_order!r}")
        X = pd.DataFrame(X)
        y = np.asarray(y).ravel()
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.unique(y)
        self.columns_ = self._input_columns(X)
        steps: list[tuple[str, Any]] = [("scaler", self._scaler_step())]
        if self.k is not None:
            steps.append(("mrmr", sel.MRMRSelector(k=int(self.k), order=self.mrmr_order)))
        steps.append(("lasso", sel.LassoSelector(
            cv=self.cv, rule=self.rule, lam=self.lam, scoring=self.scoring,
            n_lambdas=self.n_lambdas, lambda_min_ratio=self.lambda_min_ratio,
            solver=self.solver, tol=self.tol, thresh=self.thresh, max_iter=self.max_iter,
            min_features=self.min_features, random_state=self.random_state,
            compute_path=self.compute_path, screening=self.screening)))
        self.pipeline_ = Pipeline(steps).set_output(transform="pandas")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pipeline_.fit(X[self.columns_], y,
                               **({} if groups is None else {"lasso__groups": groups}))
        lasso = self.pipeline_.named_steps["lasso"]
        self.coef_ = lasso.coef_.astype(float).copy()
        self.coef_.name = "coef"
        self.intercept_ = float(lasso.intercept_)
        center, scale = self._linear_scaling()
        self.center_ = center.loc[self.coef_.index]
        self.scale_ = scale.loc[self.coef_.index]
        self.link_ = None
        return self

    def _linear_scaling(self) -> tuple[pd.Series, pd.Series]:
        """``(center, scale)`` over ``columns_`` such that scaled = (x - center) / scale."""
        idx = pd.Index(self.columns_)
        step = self.pipeline_.named_steps["scaler"]
        if step == "passthrough":
            return pd.Series(0.0, index=idx), pd.Series(1.0, index=idx)
        if self.scaler == "zscore":
            return pd.Series(step.mean_, index=idx), pd.Series(step.scale_, index=idx)
        if self.scaler == "maxabs":
            return pd.Series(0.0, index=idx), pd.Series(step.scale_, index=idx)
        rng = step.data_range_.copy()
        rng[rng == 0] = 1.0  # sklearn's handling of constant columns
        return pd.Series(step.data_min_, index=idx), pd.Series(rng, index=idx)

    @property
    def lasso_(self) -> sel.LassoSelector:
        """The fitted LASSO step (``lambda_``, ``cv_results_``, ``path_``)."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.named_steps["lasso"]

    def radscore(self, X: Any) -> np.ndarray:
        """Radscore of each row; ``X`` needs the selected columns (``coef_.index``) only."""
        check_is_fitted(self, "coef_")
        X = pd.DataFrame(X)
        cols = list(self.coef_.index)
        missing = [c for c in cols if c not in X.columns]
        if missing:
            raise ValueError(f"selected features missing from X: {missing[:5]}")
        Z = (X[cols].to_numpy(dtype=float) - self.center_.to_numpy()) / self.scale_.to_numpy()
        return self.intercept_ + Z @ self.coef_.to_numpy()

    def set_link(self, link: ProbabilityLink) -> RadscoreModel:
        """Attach a fitted :class:`ProbabilityLink` (fit it on out-of-fold radscores);
        ``predict_proba`` then returns its probabilities of this model's radscore."""
        check_is_fitted(link, "estimator_")
        check_is_fitted(self, "coef_")
        self.link_ = link
        return self

    def coefficients(self, *, raw: bool = False) -> pd.DataFrame:
        """``feature, coef`` of the selected features by |coef|, plus the ``intercept`` row.

        ``raw=True`` back-transforms to unscaled feature units (``coef / scale``, intercept
        ``- Σ coef · center / scale``): the same radscore written on the raw features.
        """
        check_is_fitted(self, "coef_")
        coef, b0 = self.coef_.to_numpy(), self.intercept_
        if raw:
            coef = coef / self.scale_.to_numpy()
            b0 = b0 - float(np.sum(coef * self.center_.to_numpy()))
        t = pd.DataFrame({"feature": list(self.coef_.index), "coef": coef})
        t = t.reindex(t["coef"].abs().sort_values(ascending=False, kind="stable").index)
        return pd.concat([t, pd.DataFrame([{"feature": "intercept", "coef": b0}])],
                         ignore_index=True)

    def stopping_rule(self, unit: str = "patient") -> str:
        """Where this model's LASSO stops, as one report sentence
        (:func:`vcfnb.selection.lasso_stopping_rule`)."""
        return sel.lasso_stopping_rule(self.solver, tol=self.tol, thresh=self.thresh, unit=unit)

    def formula(self, digits: int = 3, *, raw: bool = False, label: str = "Radscore") -> str:
        """The formula as the papers print it, terms by |coef|: ``Radscore = b0 + c1 × f1 …``
        (scaled features unless ``raw``)."""
        t = self.coefficients(raw=raw)
        b0 = float(t["coef"].iloc[-1])
        parts = [f"{label} = {b0:.{digits}f}"]
        for f, c in zip(t["feature"].iloc[:-1], t["coef"].iloc[:-1]):
            parts.append(f"{'+' if c >= 0 else '-'} {_coef_text(c, digits)} × {f}")
        return " ".join(parts)


__all__ += ["RadscoreModel", "ProbabilityLink"]


def classifier_scores(X: pd.DataFrame, y: Any, train: Any, *,
                      names: Sequence[str] = CLASSIFIERS, cv: int = 5, rng: RNGLike = None,
                      n_jobs: int = 1) -> pd.DataFrame:
    """Fit each classifier of ``names`` on the ``train`` rows of ``X`` (ids or a boolean mask),
    tuned by inner ``cv``-fold CV (``cv`` < 2: default hyper-parameters), and score every row.

    With no feature column at all (e.g. no clinical predictor qualified) every classifier's score
    is the training prevalence: constant, so :func:`vcfnb.stats.evaluate` reports AUC 0.5 and no
    cut-off instead of the fit failing.

    Returns
    -------
    DataFrame
        Index = rows of ``X``; one positive-class probability column per classifier.
    """
    tr = X.index.isin(train) if not np.asarray(train).dtype == bool else np.asarray(train)
    yy = pd.Series(np.asarray(y.reindex(X.index) if isinstance(y, pd.Series) else y),
                   index=X.index).astype(int)
    if X.shape[1] == 0:
        return pd.DataFrame({n: float(yy[tr].mean()) for n in names}, index=X.index)
    fitted = fit_classifiers(X[tr], yy[tr], list(names), cv=max(int(cv), 2), rng=rng,
                             tuned=int(cv) > 1, n_jobs=n_jobs)
    return predict_scores(fitted, X)


def cv_classifier_scores(selection: Any, X: pd.DataFrame, y: Any, *,
                         names: Sequence[str] = CLASSIFIERS, cv: int = 5, tune_cv: int = 0,
                         rng: RNGLike = None, fold_rng: RNGLike = None,
                         n_jobs: int = 1) -> pd.DataFrame:
    """Out-of-fold scores of each classifier of ``names`` (the out-of-fold counterpart of
    :func:`classifier_scores`).

    In each of ``cv`` stratified folds (seeded by ``fold_rng``) a fresh copy of ``selection``
    (an unfitted selection pipeline, or None) is fitted on the other folds and every classifier
    on its output, as :func:`classifier_scores` (``tune_cv``, ``rng``); the held-out fold is
    scored. One selection fit per fold is shared by the classifiers.

    Returns
    -------
    DataFrame
        Index = rows of ``X``; one score column per classifier, and ``fold``.
    """
    yy = pd.Series(np.asarray(y.reindex(X.index) if isinstance(y, pd.Series) else y),
                   index=X.index).astype(int)
    out = pd.DataFrame(np.nan, index=X.index, columns=list(names))
    fold = pd.Series(-1, index=X.index, name="fold")
    folds = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=_random_state(fold_rng))
    for k, (fit_pos, held_pos) in enumerate(folds.split(np.zeros(len(yy)), yy.to_numpy())):
        Xf, Xh = X.iloc[fit_pos], X.iloc[held_pos]
        if selection is not None:
            fitted = clone(selection).fit(Xf, yy.iloc[fit_pos])
            Xf, Xh = fitted.transform(Xf), fitted.transform(Xh)
        both = pd.concat([pd.DataFrame(Xf), pd.DataFrame(Xh)])
        sc = classifier_scores(both, yy.reindex(both.index), Xf.index, names=names, cv=tune_cv,
                               rng=rng, n_jobs=n_jobs)
        out.iloc[held_pos] = sc.loc[Xh.index, list(names)].to_numpy(float)
        fold.iloc[held_pos] = k
    return out.assign(fold=fold)


def step_counts(pipe: Any, n_input: int) -> pd.DataFrame:
    """Features left after each selecting step of a fitted pipeline: ``step, n_features``."""
    rows = [{"step": "input", "n_features": int(n_input)}]
    rows += [{"step": name, "n_features": len(step.get_feature_names_out())}
             for name, step in pipe.steps
             if hasattr(step, "get_feature_names_out") and hasattr(step, "transform")]
    return pd.DataFrame(rows)


__all__ += ["classifier_scores", "cv_classifier_scores", "step_counts"]


# --------------------------------------------------------------------------------------------
# a whole study from a configuration (notebooks/radiomics_study.ipynb)
# --------------------------------------------------------------------------------------------
#: the selection menu of :func:`study_pipeline` (besides scalers and oversampling)
SELECTION_MENU: tuple[str, ...] = ("variance", "correlation", "univariate", "mrmr", "lasso",
                                   "rfe", "sfs")
#: the final models :func:`study_pipeline` builds: the eight classifiers, the LASSO radscore
#: (:class:`RadscoreModel`, probability link fitted on out-of-fold scores by :func:`fit_oof`)
#: and ``SVC`` (an RBF ``sklearn.svm.SVC`` scored by its decision values, as seeds 000 and 004)
STUDY_MODELS: tuple[str, ...] = (*CLASSIFIERS, "radscore", "SVC")


def _step_spec(item: Any) -> tuple[str, dict]:
    """``"name"``, ``["name", {params}]`` (YAML) or ``("name", {params})`` → (name, params)."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and len(item) == 1:
        (name, params), = item.items()
        return str(name), dict(params or {})
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
        return item[0], dict(item[1] or {})
    raise ValueError(f"a pipeline step is a name or [name, {{parameters}}], got {item!r}")


def _seed_for(random_state: Any, key: str) -> int:
    if callable(random_state):
        return int(random_state(key))
    return _random_state(random_state)


def study_pipeline(selection: Sequence[Any], model: Any, *, tune: bool = False,
                   tune_cv: int = 3, random_state: Any = 0, n_jobs: int = 1) -> Any:
    """One estimator from a study configuration: the selection chain, then the model.

    Every step is fitted on the rows given to ``fit`` only, so the result refits the whole
    chain inside each CV fold and permutation (:func:`cv_predict`, :func:`permutation_test`).

    Parameters
    ----------
    selection : sequence
        The chain in order, each a name or ``[name, {parameters}]``: ``zscore``/``standard``,
        ``maxabs``, ``oversample``, ``variance`` (``VarianceThreshold``, label-free; parameter
        ``threshold``, default 0: constant features), ``correlation``, ``univariate``, ``mrmr``,
        ``lasso``, ``rfe``, ``sfs`` (:mod:`vcfnb.selection`; their keyword arguments).
    model : str or [name, {parameters}]
        One of :data:`STUDY_MODELS`: a classifier of :data:`CLASSIFIERS`, ``radscore``
        (:class:`RadscoreModel` keyword arguments) or ``SVC`` (RBF SVM, decision values).
    tune : bool
        Tune the model's hyper-parameters (:func:`param_grid`; ``SVC``: ``C`` and the kernel)
        by a ``tune_cv``-fold stratified grid search inside every fit (so inside every outer
        fold: nested). Not for ``radscore`` (its LASSO chooses lambda by its own CV).
    random_state : int or callable
        An int seeds every step; a callable ``key -> int`` (e.g. ``run.random_state``) seeds
        each step from its own name (``sfs``, ``lasso``, ``rfe``, the model's name; the
        radscore's LASSO from ``lasso``), so adding a step never changes another's stream.
    n_jobs : int
        Passed to the grid search.

    Returns
    -------
    estimator
        The bare model when ``selection`` is empty (so a radscore alone equals
        ``RadscoreModel(...)``), else an imbalanced-learn ``Pipeline`` with pandas output, as
        :func:`make_radiomics_pipeline` builds (steps named after the menu: ``zscore``,
        ``variance``, ``mrmr``, ..., then the model's lower-case name, ``tuned_<name>`` when
        tuned; repeats get ``_2``, ...).

    Examples
    --------
    >>> pipe = study_pipeline(["zscore", ["lasso", {"cv": 3}]], "LR", random_state=0)
    >>> [name for name, _ in pipe.steps]
    ['zscore', 'lasso', 'lr']
    >>> type(study_pipeline([], ["radscore", {"cv": 5}], random_state=0)).__name__
    'RadscoreModel'
    """
    from sklearn.feature_selection import VarianceThreshold

    steps: list[tuple[str, Any]] = []
    for item in selection:
        name, params = _step_spec(item)
        low = {"standard": "zscore"}.get(name.lower(), name.lower())
        if low == "variance":
            steps.append((low, VarianceThreshold(**params)))
            continue
        if low not in _STEP_FACTORIES:
            raise ValueError(f"unknown selection step {name!r}; choose from zscore, maxabs, "
                             f"oversample, {', '.join(SELECTION_MENU)}")
        est = _STEP_FACTORIES[low]()
        if "random_state" in est.get_params(deep=False) and "random_state" not in params:
            params["random_state"] = _seed_for(random_state, low)
        steps.append((low, est.set_params(**params)))
    name, params = _step_spec(model)
    low = name.lower()
    if low == "radscore":
        if tune:
            raise ValueError("tune is not for the radscore: its LASSO chooses lambda by CV")
        params.setdefault("random_state", _seed_for(random_state, "lasso"))
        final: Any = RadscoreModel(**params)
        grid: dict = {}
    elif low == "svc":
        params.setdefault("kernel", "rbf")
        final = SVC(**params)
        grid = {k.replace("estimator__", ""): v for k, v in _GRIDS["SVM"].items()}
    else:
        canon = _canonical(name)
        final = make_classifier(canon, random_state=_seed_for(random_state, canon.lower()))
        if params:
            final.set_params(**params)
        grid = param_grid(canon)
    if tune:
        rs = _seed_for(random_state, f"tune-{low}")
        final = GridSearchCV(final, grid, scoring="roc_auc", refit=True, n_jobs=n_jobs,
                             cv=StratifiedKFold(int(tune_cv), shuffle=True, random_state=rs),
                             error_score="raise")
    if not steps:
        return final
    named: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for key, est in [*steps, ("tuned_" + low if tune else low, final)]:
        seen[key] = seen.get(key, 0) + 1
        named.append((key if seen[key] == 1 else f"{key}_{seen[key]}", est))
    pipe = sel.Pipeline(named)
    pipe.set_output(transform="pandas")
    return pipe


def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator


def score_kind(estimator: Any) -> str:
    """``"probability"`` when an estimator has ``predict_proba``, else ``"decision"`` (for an
    unfitted one: whether its fits will have it)."""
    return "probability" if hasattr(estimator, "predict_proba") else "decision"


def fit_oof(estimator: Any, X: Any, y: Any, *, cv: Any = 5, rng: RNGLike = None,
            groups: Any = None) -> tuple[Any, pd.DataFrame]:
    """Fit ``estimator`` on all rows and score each row out of fold (``cv``-fold CV).

    When the final step is a :class:`RadscoreModel`, a :class:`ProbabilityLink` fitted on the
    out-of-fold radscores is attached to the fitted model (as the osteoporosis study's
    radscore), and the out-of-fold ``score`` is that link's probability (``radscore`` keeps the
    raw value). ``groups``: patient of each row (folds keep a patient's rows together).

    Returns
    -------
    (fitted, oof)
        ``oof`` indexed like ``X``: ``y_true, score, fold`` (+ ``radscore``).

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(60, 4)), columns=list("abcd"))
    >>> y = (X["a"] + g.normal(size=60) > 0).astype(int)
    >>> fitted, oof = fit_oof(RadscoreModel(cv=3, random_state=0), X, y, cv=3, rng=0)
    >>> score_kind(fitted), bool(oof["score"].between(0, 1).all())
    ('probability', True)
    """
    oof = cv_predict(estimator, X, y, cv=cv, rng=rng, groups=groups)
    fitted = _fresh(estimator)
    ctx = _quiet()
    try:
        fitted.fit(X, np.asarray(y).ravel())
    finally:
        ctx.__exit__(None, None, None)
    final = _final_step(fitted)
    if isinstance(final, RadscoreModel):
        link = ProbabilityLink().fit(oof["score"], oof["y_true"])
        final.set_link(link)
        oof = oof.assign(radscore=oof["score"], score=link.predict_proba(oof["score"])[:, 1])
    return fitted, oof


def positive_scores(estimator: Any, X: Any, *, groups: Any = None) -> pd.Series:
    """Scores of a fitted estimator (probability, else decision value), indexed like ``X``;
    with ``groups`` (patient of each row) averaged per patient (index ``patient_id``)."""
    ctx = _quiet()
    try:
        s = _positive_score(estimator, X)
    finally:
        ctx.__exit__(None, None, None)
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(s))
    out = pd.Series(s, index=index, name="score")
    if groups is not None:
        out = aggregate_by_patient(out, np.asarray(groups))
        out.index = out.index.astype(str)
    return out


def holdout_evaluator(X_test: Any, y_test: Any, *, cv: Any, rng: RNGLike = None,
                      groups: Any = None, test_groups: Any = None) -> Callable:
    """The ``evaluate`` callable of :func:`permutation_test` for :func:`fit_oof` models: refit
    (and re-link) on the labels given, AUC of the scores on the untouched test rows (averaged
    per patient with ``test_groups``; ``y_test`` then per patient, sorted like the ids).

    The AUC equals the one a report computes from the same model's test predictions, so a
    permutation test built on it has the reported AUC as its observed value."""

    def evaluate(estimator, X, y) -> float:
        fitted, _ = fit_oof(estimator, X, y, cv=cv, rng=rng, groups=groups)
        s = positive_scores(fitted, X_test, groups=test_groups)
        yt = (pd.Series(np.asarray(y_test), index=s.index) if not isinstance(y_test, pd.Series)
              else y_test.reindex(s.index))
        return float(roc_auc_score(yt.to_numpy(), s.to_numpy()))

    return evaluate


def repeated_cv_predict(estimator: Any, X: Any, y: Any, *, splitters: Sequence[Any],
                        groups: Any = None, n_jobs: int = 1) -> pd.DataFrame:
    """Out-of-fold scores of every repeat of a repeated CV (one splitter per repeat, e.g.
    ``[cv_splitter(k, rng=g) for _ in range(r)]`` from one generator ``g``).

    Returns
    -------
    DataFrame
        ``y_true, score, fold, row`` (the index of ``X``; its position for a multi-level
        index), ``repeat``: one row per row of ``X`` and repeat.
    """
    parts = []
    for r, splitter in enumerate(splitters):
        p = cv_predict(estimator, X, y, cv=splitter, groups=groups, n_jobs=n_jobs)
        rows = p.index.to_numpy() if p.index.nlevels == 1 else np.arange(len(p))
        parts.append(p.reset_index(drop=True).assign(row=rows, repeat=r))
    return pd.concat(parts, ignore_index=True)


def repeated_cv_evaluator(splitters: Sequence[Any], *, groups: Any = None) -> Callable:
    """The ``evaluate`` callable of :func:`permutation_test` for a repeated CV: the AUC of the
    out-of-fold scores pooled over all repeats (with ``groups``: averaged per patient within
    each repeat first), i.e. the AUC a report computes from those predictions."""

    def evaluate(estimator, X, y) -> float:
        p = repeated_cv_predict(estimator, X, y, splitters=splitters, groups=groups)
        if groups is not None:
            g = np.tile(np.asarray(groups).astype(str), len(splitters))
            p = p.assign(patient_id=g).groupby(["repeat", "patient_id"], sort=True).agg(
                y_true=("y_true", "first"), score=("score", "mean"))
        return float(roc_auc_score(p["y_true"], p["score"]))

    return evaluate


__all__ += ["SELECTION_MENU", "STUDY_MODELS", "study_pipeline", "score_kind", "fit_oof",
            "positive_scores", "holdout_evaluator", "repeated_cv_predict",
            "repeated_cv_evaluator"]


def study_models(models: Mapping[str, Any], *, selection: Sequence[Any] = (), tune: bool = False,
                 tune_cv: int = 3, random_state: Any = 0, n_jobs: int = 1) -> dict[str, Any]:
    """The models of a study configuration, each built by :func:`study_pipeline`.

    ``models`` maps a model name (as reported) to ``{"model": one of STUDY_MODELS, "params":
    {...}, "selection": [...], "tune": bool}``; ``selection`` and ``tune`` default to the shared
    ones given here (a radscore is never tuned). A bare string is ``{"model": <string>}``.

    Examples
    --------
    >>> sorted(study_models({"LR": "LR", "Radscore": {"model": "radscore", "selection": []}},
    ...                     selection=["zscore"], random_state=0))
    ['LR', 'Radscore']
    """
    out = {}
    for name, spec in models.items():
        spec = {"model": spec} if isinstance(spec, str) else dict(spec)
        unknown = sorted(set(spec) - {"model", "params", "selection", "tune"})
        if unknown or "model" not in spec:
            raise ValueError(f"model {name!r}: keys are model, params, selection, tune "
                             f"(got {sorted(spec)})")
        kind = str(spec["model"])
        if kind.lower() not in {m.lower() for m in STUDY_MODELS}:
            raise ValueError(f"model {name!r}: unknown model {kind!r}; choose from "
                             f"{', '.join(STUDY_MODELS)}")
        do_tune = bool(spec.get("tune", tune)) and kind.lower() != "radscore"
        out[str(name)] = study_pipeline(spec.get("selection", selection),
                                        [kind, dict(spec.get("params") or {})], tune=do_tune,
                                        tune_cv=tune_cv, random_state=random_state,
                                        n_jobs=n_jobs)
    return out


def study_split(cases: pd.DataFrame, *, outcome: str = "outcome", design: str = "holdout",
                test_size: float = 0.3, random_state: int = 0) -> pd.Series:
    """Each patient's role under a study design (``patient_id`` → split), in ``cases`` order.

    - ``holdout``: a ``split`` column the cohort gives (train/test, and external) is used as
      it is; without one the non-external patients are split ``train_test_split(ids,
      test_size=test_size, stratify=outcome, random_state=random_state)`` in ``cases`` order;
      ``external`` rows stay external.
    - ``external``: every non-external patient trains, the ``external`` rows validate.
    - ``cv``: every patient is ``cv`` (a ``split`` column is ignored).

    Examples
    --------
    >>> c = pd.DataFrame({"patient_id": list("abcd"), "outcome": [0, 1, 0, 1],
    ...                   "split": ["train", "train", "test", "test"]})
    >>> study_split(c).tolist()
    ['train', 'train', 'test', 'test']
    """
    if design not in ("holdout", "external", "cv"):
        raise ValueError(f"design must be holdout, external or cv, got {design!r}")
    ids = cases["patient_id"].astype(str)
    given = (cases["split"] if "split" in cases else pd.Series("", index=cases.index)
             ).fillna("").astype(str).str.strip().str.lower()
    bad = ~given.isin(["", "train", "test", "external"])
    if bad.any():
        raise ValueError(f"cases.csv: split must be train, test, external or empty; found "
                         f"{sorted(set(given[bad]))[:5]}")
    if design == "cv":
        return pd.Series("cv", index=ids.to_numpy(), name="split")
    out = given.copy()
    internal = given != "external"
    if design == "external":
        if not (~internal).any():
            raise ValueError("design 'external' needs patients with split = external")
        out[internal] = "train"
    elif given[internal].eq("").all():
        tr, te = train_test_split(np.flatnonzero(internal.to_numpy()), test_size=test_size,
                                  stratify=cases.loc[internal, outcome].to_numpy(),
                                  random_state=random_state)
        out.iloc[tr], out.iloc[te] = "train", "test"
    elif given[internal].eq("").any() or given[internal].nunique() < 2:
        raise ValueError("cases.csv: the split is given for some internal patients but not all, "
                         "or lacks a train or a test group; give train/test for every internal "
                         "patient or leave it empty")
    return pd.Series(out.to_numpy(), index=ids.to_numpy(), name="split")


def _patient_mean(df: pd.DataFrame, groups: Any) -> pd.DataFrame:
    """Average the scores of each patient's rows (``y_true`` and ``fold`` are per patient)."""
    g = pd.Series(np.asarray(groups).astype(str), index=df.index, name="patient_id")
    agg = {"y_true": ("y_true", "first"), "score": ("score", "mean")}
    if "fold" in df:
        agg["fold"] = ("fold", "first")
    return df.groupby(g, sort=True).agg(**agg)


def holdout_predictions(estimator: Any, X: pd.DataFrame, y: Any, split: Any, *, cv: Any = 5,
                        rng: RNGLike = None, groups: Any = None) -> tuple[Any, pd.DataFrame]:
    """Fit on the ``train`` rows (:func:`fit_oof`) and score every split, one row per patient.

    ``split`` (one value per row of ``X``: train/test/external) chooses the rows; ``groups``
    (patient of each row, for several rows per patient) makes the out-of-fold folds keep a
    patient's rows together and averages each patient's scores.

    Returns
    -------
    (fitted, predictions)
        ``predictions``: ``split`` (``train_oof`` for the out-of-fold training scores, then
        ``test``/``external``), ``patient_id, y_true, score, fold, score_kind`` -- ready for
        :meth:`vcfnb.report.Run.predictions`.
    """
    split = np.asarray(split).astype(str)
    y = pd.Series(np.asarray(y).ravel(), index=X.index).astype(int)
    tr = split == "train"
    g = None if groups is None else np.asarray(groups).astype(str)
    fitted, oof = fit_oof(estimator, X[tr], y[tr], cv=cv, rng=rng,
                          groups=None if g is None else g[tr])
    kind = score_kind(fitted)
    oof = oof[["y_true", "score", "fold"]]
    oof = _patient_mean(oof, g[tr]) if g is not None else oof.rename_axis("patient_id")
    parts = [oof.reset_index().assign(split="train_oof")]
    for s in ("test", "external"):
        rows = split == s
        if rows.any():
            score = positive_scores(fitted, X[rows], groups=None if g is None else g[rows])
            truth = (y[rows].groupby(g[rows]).first() if g is not None else y[rows])
            truth.index = truth.index.astype(str)
            parts.append(pd.DataFrame({"patient_id": score.index.astype(str), "y_true":
                                       truth.reindex(score.index.astype(str)).to_numpy(),
                                       "score": score.to_numpy(), "fold": -1, "split": s}))
    out = pd.concat(parts, ignore_index=True)
    out["patient_id"] = out["patient_id"].astype(str)
    out["score_kind"] = kind
    return fitted, out[["split", "patient_id", "y_true", "score", "fold", "score_kind"]]


def cv_splitters(n_folds: int, n_repeats: int = 1, *, rng: RNGLike = None,
                 grouped: bool = False) -> list:
    """``n_repeats`` shuffled stratified ``n_folds``-fold splitters drawn from one generator
    (:func:`cv_splitter`; the first equals ``cv_splitter(n_folds, rng=rng)`` of the same
    generator)."""
    g = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    return [cv_splitter(n_folds, rng=g, grouped=grouped) for _ in range(int(n_repeats))]


def cv_predictions(estimator: Any, X: pd.DataFrame, y: Any, *, splitters: Sequence[Any],
                   groups: Any = None, n_jobs: int = 1) -> pd.DataFrame:
    """Repeated-CV predictions one row per patient and repeat: ``patient_id, y_true, score,
    fold, repeat, score_kind`` (``groups``: several rows per patient, scores averaged).

    ``score_kind``: :func:`score_kind` of ``estimator`` (scikit-learn exposes
    ``predict_proba`` on an unfitted estimator exactly when its fitted copies will have it; a
    radscore without link and an ``SVC`` give decision values)."""
    p = repeated_cv_predict(estimator, X, y, splitters=splitters, groups=groups, n_jobs=n_jobs)
    if groups is not None:
        g = np.tile(np.asarray(groups).astype(str), len(splitters))
        p = p.assign(patient_id=g).groupby(["repeat", "patient_id"], sort=True).agg(
            y_true=("y_true", "first"), score=("score", "mean"), fold=("fold", "first")
        ).reset_index()
    else:
        p = p.rename(columns={"row": "patient_id"})
    p["patient_id"] = p["patient_id"].astype(str)
    p["score_kind"] = score_kind(estimator)
    return p[["patient_id", "y_true", "score", "fold", "repeat", "score_kind"]]


__all__ += ["study_models", "study_split", "holdout_predictions", "cv_splitters",
            "cv_predictions"]


# --------------------------------------------------------------------------------------------
# what drives a model: per-feature contributions
# --------------------------------------------------------------------------------------------
CONTRIBUTION_COLUMNS = ["feature", "mean_abs", "mean", "std", "direction", "method"]


def _split_head(model: Any) -> tuple[Any, Any]:
    """``(transform head or None, final estimator)`` of a pipeline / RadscoreModel / model.
    Samplers just before the final estimator act at fit time only and are left out."""
    if hasattr(model, "steps") and len(model.steps) > 1:
        k = len(model.steps) - 1
        while k > 0 and hasattr(model.steps[k - 1][1], "fit_resample"):
            k -= 1
        return (model[:k] if k else None), model.steps[-1][1]
    if hasattr(model, "steps"):
        return None, model.steps[-1][1]
    return None, model


def _head_transform(head: Any, X: pd.DataFrame) -> pd.DataFrame:
    if head is None:
        return X
    Z = head.transform(X)
    if not isinstance(Z, pd.DataFrame):
        try:
            names = [str(c) for c in head.get_feature_names_out()]
        except Exception:  # noqa: BLE001 - a step without feature names
            names = [f"x{i}" for i in range(np.shape(Z)[1])]
        Z = pd.DataFrame(np.asarray(Z), columns=names, index=X.index)
    return Z


def _contribution_summary(per_row: pd.DataFrame, method: str,
                          direction: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({"feature": [str(c) for c in per_row.columns],
                        "mean_abs": per_row.abs().mean().to_numpy(float),
                        "mean": per_row.mean().to_numpy(float),
                        "std": per_row.std(ddof=1).to_numpy(float) if len(per_row) > 1
                        else np.nan, "direction": np.sign(direction).astype(float),
                        "method": method})
    out = out.sort_values("mean_abs", ascending=False, kind="stable").reset_index(drop=True)
    out.attrs["per_row"] = per_row
    return out


def feature_contributions(model: Any, X: Any, y: Any = None, *, method: str = "auto",
                          n_repeats: int = 20, rng: RNGLike = None) -> pd.DataFrame:
    """Per-feature contributions of a fitted model on rows ``X`` (what drives its scores).

    Parameters
    ----------
    model : fitted estimator
        :class:`RadscoreModel`, a pipeline ending in a linear model (``coef_``), in an
        XGBoost or LightGBM classifier, or any classifier (permutation importance).
    X : DataFrame
        The model's input rows (same columns as in ``fit``).
    y : array-like, optional
        Labels; needed by ``method="permutation"`` only.
    method : {"auto", "linear", "tree", "permutation"}
        ``linear``: exact linear contributions on the log-odds scale, coefficient × the value
        the final linear model sees (the standardised feature), so that for every row the
        intercept plus the contributions equals the model's decision value (radscore).
        ``tree``: TreeSHAP contributions from the booster itself (XGBoost
        ``pred_contribs=True``, LightGBM ``pred_contrib=True``; log-odds scale; the bias column
        is left out, the contributions plus the bias equal the raw margin). ``permutation``:
        scikit-learn's permutation importance (drop in AUC when a feature is shuffled,
        ``n_repeats`` times; model-agnostic, for ExtraTrees/RandomForest/KNN/MLP/SVM).
        ``auto`` picks the first that applies in this order.
    n_repeats : int
        Shuffles per feature for ``permutation``.
    rng : int, Generator or None
        Seed of the shuffles.

    Returns
    -------
    DataFrame
        ``feature, mean_abs, mean, std, direction, method``, by decreasing ``mean_abs``.
        ``direction`` is +1 when a higher feature value raises the score (linear: the sign of
        the coefficient; tree: the sign of the correlation between value and contribution),
        -1 when it lowers it, NaN for permutation importance (there ``mean_abs`` and ``mean``
        are the mean AUC drop and ``std`` its SD over the repeats).
        ``attrs["per_row"]``: rows × features contributions (linear, tree) or repeats ×
        features AUC drops (permutation); ``attrs["intercept"]``: the intercept or bias (a
        float, or per row for trees).

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(60, 3)), columns=["a", "b", "c"])
    >>> y = (X["a"] + 0.3 * g.normal(size=60) > 0).astype(int)
    >>> pipe = make_radiomics_pipeline(["zscore", "LR"], rng=0).fit(X, y)
    >>> t = feature_contributions(pipe, X)
    >>> t["feature"].iloc[0], t["method"].iloc[0]
    ('a', 'linear')
    >>> total = t.attrs["per_row"].sum(axis=1) + t.attrs["intercept"]
    >>> bool(np.allclose(total, pipe.decision_function(X)))
    True
    """
    if method not in ("auto", "linear", "tree", "permutation"):
        raise ValueError(f"method must be auto, linear, tree or permutation, got {method!r}")
    X = pd.DataFrame(X)
    if isinstance(model, RadscoreModel):
        if method not in ("auto", "linear"):
            raise ValueError("a RadscoreModel has exact linear contributions: method='linear'")
        check_is_fitted(model, "coef_")
        cols = list(model.coef_.index)
        Z = (X[cols].to_numpy(float) - model.center_.to_numpy()) / model.scale_.to_numpy()
        per_row = pd.DataFrame(Z * model.coef_.to_numpy(), columns=cols, index=X.index)
        out = _contribution_summary(per_row, "linear", model.coef_.to_numpy(float))
        out.attrs["intercept"] = float(model.intercept_)
        return out
    head, last = _split_head(model)
    kind = type(last).__name__
    is_linear = hasattr(last, "coef_") and np.ndim(getattr(last, "coef_", None)) in (1, 2) \
        and np.asarray(last.coef_).reshape(-1).size == np.asarray(last.coef_).shape[-1]
    is_tree = kind in ("XGBClassifier", "LGBMClassifier")
    if method == "auto":
        method = "linear" if is_linear else "tree" if is_tree else "permutation"
    if method == "linear":
        if not is_linear:
            raise ValueError(f"{kind} has no single row of coefficients: use 'permutation'")
        Z = _head_transform(head, X)
        coef = np.asarray(last.coef_, dtype=float).reshape(-1)
        per_row = pd.DataFrame(Z.to_numpy(float) * coef, columns=list(Z.columns), index=X.index)
        out = _contribution_summary(per_row, "linear", coef)
        out.attrs["intercept"] = float(np.ravel(getattr(last, "intercept_", [0.0]))[0])
        return out
    if method == "tree":
        if not is_tree:
            raise ValueError(f"{kind} is not an XGBoost/LightGBM model: use 'permutation'")
        Z = _head_transform(head, X)
        if kind == "XGBClassifier":
            import xgboost as xgb

            contrib = last.get_booster().predict(xgb.DMatrix(Z), pred_contribs=True)
        else:
            contrib = last.predict(Z, pred_contrib=True)
        contrib = np.asarray(contrib, dtype=float)
        per_row = pd.DataFrame(contrib[:, :-1], columns=list(Z.columns), index=X.index)
        with np.errstate(all="ignore"):
            corr = [np.corrcoef(Z.iloc[:, j].to_numpy(float), per_row.iloc[:, j])[0, 1]
                    if per_row.iloc[:, j].std() > 0 and Z.iloc[:, j].std() > 0 else 0.0
                    for j in range(per_row.shape[1])]
        out = _contribution_summary(per_row, "tree", np.nan_to_num(np.asarray(corr)))
        out.attrs["intercept"] = contrib[:, -1]
        return out
    from sklearn.inspection import permutation_importance

    if y is None:
        raise ValueError("permutation importance needs the labels y")
    res = permutation_importance(model, X, np.asarray(y).ravel(), scoring="roc_auc",
                                 n_repeats=int(n_repeats), random_state=_random_state(rng))
    per_rep = pd.DataFrame(res.importances.T, columns=[str(c) for c in X.columns])
    out = pd.DataFrame({"feature": list(per_rep.columns),
                        "mean_abs": res.importances_mean, "mean": res.importances_mean,
                        "std": res.importances_std, "direction": np.nan,
                        "method": "permutation"})
    out = out.sort_values("mean_abs", ascending=False, kind="stable").reset_index(drop=True)
    out.attrs["per_row"] = per_rep
    out.attrs["intercept"] = None
    return out


__all__ += ["feature_contributions", "CONTRIBUTION_COLUMNS"]


def deployable(fitted: Any) -> Any:
    """The fitted estimator with every fitted grid search replaced by its refitted best
    estimator (same scores; no scorer or CV splitter inside), e.g. to save it
    (:func:`vcfnb.bundle.save_model`). Other estimators are returned as they are.

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(40, 3)), columns=list("abc")); y = (X.a > 0).astype(int)
    >>> pipe = study_pipeline(["zscore"], "LR", tune=True, random_state=0).fit(X, y)
    >>> type(deployable(pipe).steps[-1][1]).__name__
    'LogisticRegression'
    """
    import copy

    if isinstance(fitted, GridSearchCV):
        return fitted.best_estimator_
    if hasattr(fitted, "steps"):
        out = copy.copy(fitted)
        out.steps = [(n, deployable(s)) for n, s in fitted.steps]
        return out
    return fitted


__all__ += ["deployable"]


def choose_test_scores(frame: pd.DataFrame, policy: str = "auto", *, tol: float = 1.25
                       ) -> tuple[pd.Series, pd.DataFrame]:
    """Scores of a stacked chain for a second-level model: training patients out of fold, the
    others from the full-training chain or the mean of the fold chains, after a scale check.

    ``frame`` is a :meth:`vcfnb.deep.DeepOOF.chain` frame (``oof, full, fold_mean, fold, fold_0 …``).
    A second-level model (e.g. a nomogram) fitted on ``oof`` scores expects test scores on the
    fold chains' scale. The full-training chain can have another one (another network, other
    selected features, coefficients fitted on more rows). The check uses **training rows only**
    and no label: ``sd_ratio`` = SD of the full chain's scores over the mean SD of the fold
    chains' scores, ``shift`` = difference of their means in fold-chain SDs (both chains have seen
    most of these rows, so both are in-sample here). The scales agree when ``sd_ratio`` is within
    [1/``tol``, ``tol``] and ``|shift|`` <= ``tol`` - 1. ``policy``: ``"auto"`` (full chain when
    they agree, else the fold mean), ``"full"`` or ``"fold_mean"`` (forced; the table still says
    whether the scales agree). ``fold_mean_shrinkage`` (SD of the fold mean over the fold
    chains' SD) shows how much averaging narrows the fold mean.

    Returns
    -------
    (Series, DataFrame)
        The scores (training rows ``oof``, others the chosen column) and a one-row table of the
        check (``sd_ratio, shift, correlation, fold_mean_shrinkage, tol, scales_agree, policy,
        test_scores``).

    Examples
    --------
    >>> f = pd.DataFrame({"oof": [0.1, -1.0, np.nan], "full": [0.2, -1.1, 0.5],
    ...                   "fold_mean": [0.1, -1.0, 0.4], "fold": [0, 1, -1],
    ...                   "fold_0": [0.2, -1.0, 0.4], "fold_1": [0.1, -1.0, 0.4]})
    >>> s, t = choose_test_scores(f)
    >>> s.tolist(), t.test_scores.iat[0]
    ([0.1, -1.0, 0.5], 'full')
    """
    if policy not in ("auto", "full", "fold_mean"):
        raise ValueError(f"policy must be 'auto', 'full' or 'fold_mean', got {policy!r}")
    if not (np.isfinite(tol) and tol > 1):  # tol <= 1: scales could never agree
        raise ValueError(f"tol must be a finite number > 1, got {tol!r}")
    train = frame["fold"] >= 0
    tr = frame[train]
    fcols = [c for c in frame.columns if c.startswith("fold_") and c != "fold_mean"]
    sd_folds = float(tr[fcols].std().mean())
    sd_ratio = float(tr["full"].std() / sd_folds) if sd_folds > 0 else np.inf
    shift = float((tr["full"].mean() - tr[fcols].mean().mean()) / sd_folds) if sd_folds > 0 \
        else np.inf
    corr = float(np.nanmean([tr["full"].corr(tr[c]) for c in fcols]))
    agree = bool(1 / tol <= sd_ratio <= tol and abs(shift) <= tol - 1)
    used = policy if policy != "auto" else ("full" if agree else "fold_mean")
    table = pd.DataFrame([{"sd_ratio": sd_ratio, "shift": shift, "correlation": corr,
                           "fold_mean_shrinkage": float(tr["fold_mean"].std() / sd_folds)
                           if sd_folds > 0 else np.nan, "tol": float(tol),
                           "scales_agree": agree, "policy": policy, "test_scores": used}])
    return frame["oof"].where(train, frame[used]).rename(frame.index.name), table


__all__ += ["choose_test_scores"]


class FoldMeanRadscore(_RadscoreOutputs, ClassifierMixin, TransformerMixin, BaseEstimator):
    """The mean radscore of fitted fold models, with an optional probability link.

    Built from the fold models of a cross-validation (e.g. the :class:`RadscoreModel`
    estimators :func:`cv_fit` keeps) by :meth:`set_folds`, never fitted on rows itself: it is
    the "mean of the fold models" that scores new patients when the full-training chain's score
    scale does not agree with the fold chains' (:func:`fit_linked_radscore`). Each fold model
    is linear in the raw features, so their mean is one linear formula: ``coef_`` and
    ``intercept_`` write it on the raw (unscaled) features; :meth:`radscore` averages the fold
    models' radscores (equal to that formula up to rounding).

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(60, 5)), columns=list("abcde"))
    >>> y = (X["a"] + g.normal(size=60) > 0).astype(int)
    >>> folds = cv_fit(RadscoreModel(lam=0.05, random_state=0), X, y, cv=3, rng=0).estimators
    >>> m = FoldMeanRadscore().set_folds(folds)
    >>> bool(np.allclose(m.radscore(X), np.mean([f.radscore(X) for f in folds], axis=0)))
    True
    >>> bool(np.allclose(m.radscore(X), m.intercept_ + X[m.coef_.index] @ m.coef_))
    True
    """

    def __init__(self, name: str = "radscore") -> None:
        self.name = name

    def set_folds(self, estimators: Sequence[Any], link: ProbabilityLink | None = None
                  ) -> FoldMeanRadscore:
        """Use these fitted fold models (each with ``radscore`` and ``coefficients(raw=True)``)
        and, optionally, a fitted :class:`ProbabilityLink` of their mean radscore."""
        if not estimators:
            raise ValueError("FoldMeanRadscore needs at least one fitted fold model")
        for e in estimators:
            check_is_fitted(e, "coef_")
        self.estimators_ = list(estimators)
        first = self.estimators_[0]
        self.classes_ = first.classes_
        self.feature_names_in_ = first.feature_names_in_
        self.n_features_in_ = first.n_features_in_
        raw = [e.coefficients(raw=True).set_index("feature")["coef"] for e in self.estimators_]
        self.intercept_ = float(np.mean([r["intercept"] for r in raw]))
        terms = pd.concat([r.drop("intercept") for r in raw], axis=1).fillna(0.0)
        self.coef_ = terms.mean(axis=1).rename("coef")
        self.coef_.index.name = None
        self.link_ = None
        return self if link is None else self.set_link(link)

    def _check_folds(self) -> None:
        if not hasattr(self, "estimators_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("FoldMeanRadscore has no fold models: call set_folds first")

    def radscore(self, X: Any) -> np.ndarray:
        """Mean of the fold models' radscores of each row."""
        self._check_folds()
        return np.mean([e.radscore(X) for e in self.estimators_], axis=0)

    def set_link(self, link: ProbabilityLink) -> FoldMeanRadscore:
        """Attach a fitted :class:`ProbabilityLink` (fitted on out-of-fold radscores)."""
        check_is_fitted(link, "estimator_")
        self._check_folds()
        self.link_ = link
        return self


@dataclass
class LinkedRadscore:
    """Result of :func:`fit_linked_radscore`.

    ``model`` scores new patients (the full-training chain or the fold mean, link attached);
    ``full`` is the full-training chain (with the same link: its coefficients are the formula a
    paper prints); ``folds`` the fold mean; ``oof``: ``y_true, score`` (out-of-fold radscore)
    ``, fold, probability`` per training row; ``scale``: the one-row check of
    :func:`choose_test_scores` (``test_scores`` says which scored new patients)."""

    model: Any
    full: Any
    folds: FoldMeanRadscore
    oof: pd.DataFrame
    scale: pd.DataFrame


def fit_linked_radscore(model: Any, X: pd.DataFrame, y: Any, *, cv: Any, rng: RNGLike = None,
                        test_scores: str = "auto", tol: float = 1.25) -> LinkedRadscore:
    """A radscore model with a :class:`ProbabilityLink` fitted on its out-of-fold radscores,
    and the choice of the chain that scores new patients.

    ``model`` (e.g. a :class:`RadscoreModel`) is refitted in each of ``cv`` folds
    (:func:`cv_fit`, seeded by ``rng``); the link is fitted on the out-of-fold radscores. The
    link expects new patients' radscores on the fold models' scale, while the model refitted on
    every row (its LASSO lambda chosen on more rows) may have another. :func:`choose_test_scores`
    compares the two scales on the training rows without labels; ``test_scores="auto"`` scores
    new patients with the full-training chain when they agree, else with the mean of the fold
    models (:class:`FoldMeanRadscore`); ``"full"`` or ``"fold_mean"`` force one.

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(60, 4)), columns=list("abcd"))
    >>> y = (X["a"] + g.normal(size=60) > 0).astype(int)
    >>> r = fit_linked_radscore(RadscoreModel(lam=0.05, random_state=0), X, y, cv=3, rng=0,
    ...                         test_scores="fold_mean")
    >>> type(r.model).__name__, r.scale.test_scores.iat[0], hasattr(r.model, "predict_proba")
    ('FoldMeanRadscore', 'fold_mean', True)
    """
    X = pd.DataFrame(X)
    res = cv_fit(model, X, y, cv=cv, rng=rng)
    oof = res.predictions
    link = ProbabilityLink().fit(oof["score"], oof["y_true"])
    full = _fresh(model)
    ctx = _quiet()
    try:
        full.fit(X, np.asarray(y).ravel())
    finally:
        ctx.__exit__(None, None, None)
    full.set_link(link)
    folds = FoldMeanRadscore(name=getattr(full, "name", "radscore")).set_folds(res.estimators,
                                                                              link)
    frame = pd.DataFrame({"oof": oof["score"], "full": full.radscore(X),
                          "fold_mean": folds.radscore(X), "fold": oof["fold"]}, index=X.index)
    for k, e in enumerate(res.estimators):
        frame[f"fold_{k}"] = e.radscore(X)
    _, scale = choose_test_scores(frame, test_scores, tol=tol)
    chosen = full if scale["test_scores"].iat[0] == "full" else folds
    return LinkedRadscore(chosen, full, folds, oof.assign(
        probability=link.predict_proba(oof["score"])[:, 1]), scale)


__all__ += ["FoldMeanRadscore", "LinkedRadscore", "fit_linked_radscore"]
