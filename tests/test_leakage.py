"""Leakage proof: selection inside CV gives chance AUC on noise; selection before CV does not.

Pure noise (60 samples × 2000 features, balanced random labels). The full pipeline
z-score → univariate t-test filter → LASSO (inner 5-fold CV) → logistic regression, refitted
inside every outer fold by ``vcfnb.models.cv_predict``, must give AUC near 0.5. Fitting the same
selection on all 60 rows first and cross-validating only the classifier (what popular tools do)
must give a clearly inflated AUC.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from sklearn.metrics import roc_auc_score

from vcfnb import models, selection


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny fits: BLAS threads only add contention (2-3x slower on a busy 2-core machine)."""
    with threadpool_limits(limits=1):
        yield

SELECTION = ["zscore", ("univariate", {"test": "ttest", "alpha": 0.05}),
             ("lasso", {"cv": 5, "n_lambdas": 20})]


def _noise(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    gen = np.random.default_rng(seed)
    X = pd.DataFrame(gen.standard_normal((60, 2000)), columns=[f"f{i:04d}" for i in range(2000)])
    y = gen.permutation(np.r_[np.zeros(30, int), np.ones(30, int)])
    return X, y


@pytest.fixture(scope="module")
def aucs() -> pd.DataFrame:
    rows = []
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", UserWarning)  # LASSO/filter fallbacks on noise
        for seed in (0, 1, 2):
            X, y = _noise(seed)
            honest = models.make_radiomics_pipeline([*SELECTION, "LR"], rng=seed)
            pred = models.cv_predict(honest, X, y, cv=5, rng=seed)
            assert pred["fold"].nunique() == 5 and pred["score"].notna().all()
            auc_honest = roc_auc_score(pred["y_true"], pred["score"])

            head = models.make_radiomics_pipeline(SELECTION, rng=seed).fit(X, y)  # sees all rows
            X_sel = head.transform(X)
            leaky = models.cv_predict(models.make_classifier("LR"), X_sel, y, cv=5, rng=seed)
            auc_leaky = roc_auc_score(leaky["y_true"], leaky["score"])
            rows.append({"seed": seed, "honest": auc_honest, "leaky": auc_leaky,
                         "n_selected_leaky": X_sel.shape[1]})
    return pd.DataFrame(rows)


def test_pipeline_inside_cv_is_at_chance_on_noise(aucs):
    # one 60-sample dataset has an AUC SD of ~0.1 under the null; the mean of three ~0.06
    assert 0.35 <= aucs["honest"].mean() <= 0.65, aucs
    assert aucs["honest"].between(0.2, 0.8).all(), aucs


def test_selection_before_cv_is_inflated(aucs):
    assert (aucs["leaky"] > 0.75).all(), aucs
    assert (aucs["leaky"] - aucs["honest"]).mean() > 0.25, aucs
    assert (aucs["n_selected_leaky"] >= 1).all()


def test_selection_is_refitted_in_every_fold():
    """The selectors inside cv_predict only ever see their fold's training rows."""
    seen: list[pd.Index] = []

    class Recording(selection.UnivariateFilter):
        def fit(self, X, y):
            seen.append(X.index.copy())
            return super().fit(X, y)

    X, y = _noise(3)
    X = X.iloc[:, :200]
    pipe = models.make_radiomics_pipeline(
        ["zscore", Recording(test="ttest"), ("lasso", {"cv": 3, "n_lambdas": 10}), "LR"], rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pred = models.cv_predict(pipe, X, y, cv=4, rng=0)
    assert len(seen) == 4
    for k, train_rows in enumerate(seen):
        test_rows = pred.index[pred["fold"] == k]
        assert len(train_rows.intersection(test_rows)) == 0
        assert len(train_rows) + len(test_rows) == len(X)
