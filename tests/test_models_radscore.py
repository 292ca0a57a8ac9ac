"""vcfnb.models.RadscoreModel reproduces the two study radscore classes it replaces.

``osteoporosis.RadscoreModel`` (z-score → LASSO → in-sample logistic link) and
``ovf.CompartmentRadscore`` (max-abs → mRMR → LASSO on one compartment's columns) are kept
below verbatim (code of commit 09f5891, docstrings dropped) as reference implementations, since
the study modules now use the generic class. With the matching arguments the generic class
gives the same selected features, coefficients and radscores (to 1e-10) on small generated
data. The probability link is never fitted inside the generic model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from vcfnb import selection
from vcfnb.models import ProbabilityLink, RadscoreModel, cv_predict
from vcfnb.selection import LassoSelector


# ---- reference implementations (vcfnb/studies/{osteoporosis,ovf}.py at 09f5891) -------------
class LegacyOsteoporosisRadscore(ClassifierMixin, BaseEstimator):

    def __init__(self, lam: float | None = None, cv: int = 10, rule: str = "min",
                 scoring: str = "roc_auc", n_lambdas: int = 25, min_features: int = 1,
                 random_state: int | None = None, compute_path: bool = True):
        self.lam = lam
        self.cv = cv
        self.rule = rule
        self.scoring = scoring
        self.n_lambdas = n_lambdas
        self.min_features = min_features
        self.random_state = random_state
        self.compute_path = compute_path

    def fit(self, X: pd.DataFrame, y) -> "LegacyOsteoporosisRadscore":
        import warnings

        X = pd.DataFrame(X)
        y = np.asarray(y).astype(int)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.classes_ = np.array([0, 1])
        self.scaler_ = StandardScaler().set_output(transform="pandas").fit(X)
        Z = self.scaler_.transform(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.lasso_ = LassoSelector(cv=self.cv, rule=self.rule, lam=self.lam,
                                        scoring=self.scoring, n_lambdas=self.n_lambdas,
                                        min_features=self.min_features,
                                        random_state=self.random_state,
                                        compute_path=self.compute_path).fit(Z, y)
        self.coef_ = self.lasso_.coef_.copy()
        self.intercept_ = float(self.lasso_.intercept_)
        score = self._radscore(Z)
        self.link_ = LogisticRegression(C=1e6, max_iter=1000).fit(
            score.reshape(-1, 1), y)
        return self

    def _radscore(self, Z: pd.DataFrame) -> np.ndarray:
        return self.intercept_ + Z[self.coef_.index].to_numpy(float) @ self.coef_.to_numpy(float)

    def radscore(self, X: pd.DataFrame) -> np.ndarray:
        """Radscore of each row (linear predictor of the LASSO model on z-scored features)."""
        Z = self.scaler_.transform(pd.DataFrame(X)[self.feature_names_in_])
        return self._radscore(Z)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.link_.predict_proba(self.radscore(X).reshape(-1, 1))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return self.radscore(X)

    def coefficients(self) -> pd.DataFrame:
        """``feature, coef`` of the selected features plus the intercept row, by |coef|."""
        t = pd.DataFrame({"feature": self.coef_.index, "coef": self.coef_.to_numpy()})
        t = t.reindex(t["coef"].abs().sort_values(ascending=False).index)
        return pd.concat([t, pd.DataFrame([{"feature": "intercept", "coef": self.intercept_}])],
                         ignore_index=True)

    def formula(self, digits: int = 3) -> str:
        """The radscore formula as the paper prints it (z-scored features)."""
        t = self.coefficients()
        parts = [f"{self.intercept_:.{digits}f}"]
        for f, c in zip(t["feature"], t["coef"]):
            if f == "intercept":
                continue
            parts.append(f"{'+' if c >= 0 else '-'} {abs(c):.{digits}f} × {f}")
        return "Radscore = " + " ".join(parts)


def _usable(X: pd.DataFrame) -> list[str]:
    """Columns that are finite everywhere and not constant."""
    ok = np.isfinite(X.to_numpy(float)).all(axis=0) & (X.nunique() > 1).to_numpy()
    return list(X.columns[ok])


class LegacyCompartmentRadscore(TransformerMixin, BaseEstimator):

    def __init__(self, compartment: str = "cortical", k: int = 30, cv: int = 10,
                 rule: str = "min", lam: float | None = None, random_state: int | None = None,
                 solver: str = "liblinear"):
        self.solver = solver
        self.compartment = compartment
        self.k = k
        self.cv = cv
        self.rule = rule
        self.lam = lam
        self.random_state = random_state

    def _cols(self, X: pd.DataFrame) -> list[str]:
        pre = f"{self.compartment}__"
        cols = [c for c in X.columns if str(c).startswith(pre)]
        if not cols:
            raise ValueError(f"no column starts with {pre!r}")
        return cols

    def fit(self, X: pd.DataFrame, y) -> "LegacyCompartmentRadscore":
        X = pd.DataFrame(X)
        self.columns_ = _usable(X[self._cols(X)])
        self.pipeline_ = Pipeline([
            ("maxabs", selection.MaxAbsScaler()),
            ("mrmr", selection.MRMRSelector(k=self.k, order="ranking")),
            ("lasso", selection.LassoSelector(cv=self.cv, rule=self.rule, lam=self.lam,
                                              random_state=self.random_state, min_features=1,
                                              solver=self.solver, lambda_min_ratio=0.01,
                                              n_lambdas=40, tol=1e-3, max_iter=2000)),
        ]).set_output(transform="pandas")
        self.pipeline_.fit(X[self.columns_], np.asarray(y))
        lasso = self.pipeline_.named_steps["lasso"]
        pre = len(self.compartment) + 2
        self.coef_ = pd.Series(lasso.coef_.to_numpy(float),
                               index=[str(c)[pre:] for c in lasso.coef_.index], name="coef")
        self.intercept_ = float(lasso.intercept_)
        scaler = self.pipeline_.named_steps["maxabs"]
        self.scale_ = pd.Series(scaler.scale_, index=[c[pre:] for c in self.columns_])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = pd.DataFrame(X)
        pre = f"{self.compartment}__"
        Z = X[[pre + c for c in self.coef_.index]].to_numpy(float) / \
            self.scale_[self.coef_.index].to_numpy(float)
        score = self.intercept_ + Z @ self.coef_.to_numpy(float)
        return pd.DataFrame({f"radscore_{self.compartment}": score}, index=X.index)

    def get_feature_names_out(self, input_features=None):
        return np.array([f"radscore_{self.compartment}"], dtype=object)

    @property
    def lasso_(self):
        """The fitted :class:`vcfnb.selection.LassoSelector` (CV curve ``cv_results_``, ``path_``)."""
        return self.pipeline_.named_steps["lasso"]


# ---- tests ----------------------------------------------------------------------------------


def _data(seed: int, n: int = 90, p: int = 24, prefix: str = "") -> tuple[pd.DataFrame, np.ndarray]:
    g = np.random.default_rng(seed)
    X = pd.DataFrame(g.normal(size=(n, p)) * g.uniform(0.5, 20, p) + g.uniform(-5, 50, p),
                     columns=[f"{prefix}f{i:02d}" for i in range(p)])
    lin = (X.iloc[:, 0] - X.iloc[:, 0].mean()) / X.iloc[:, 0].std() \
        - 0.7 * (X.iloc[:, 3] - X.iloc[:, 3].mean()) / X.iloc[:, 3].std()
    y = (lin + g.normal(size=n) > 0).astype(int).to_numpy()
    return X, y


@pytest.mark.parametrize("kwargs", [
    {"cv": 5, "rule": "1se", "scoring": "deviance", "random_state": 0},   # the study's fit_models
    {"cv": 5, "rule": "min", "scoring": "roc_auc", "random_state": 3},
    {"lam": 0.05, "random_state": 1},  # liblinear needs a seed to be reproducible
])
def test_reproduces_osteoporosis_radscore(kwargs):
    X, y = _data(1)
    Xtr, ytr, Xte = X.iloc[:60], y[:60], X.iloc[60:]
    old = LegacyOsteoporosisRadscore(n_lambdas=25, **kwargs).fit(Xtr, ytr)
    new = RadscoreModel(scaler="zscore", n_lambdas=25, **kwargs).fit(Xtr, ytr)
    assert list(new.coef_.index) == list(old.coef_.index)
    np.testing.assert_allclose(new.coef_.to_numpy(), old.coef_.to_numpy(), rtol=0, atol=1e-10)
    assert abs(new.intercept_ - old.intercept_) < 1e-10
    for data in (Xtr, Xte):
        np.testing.assert_allclose(new.radscore(data), old.radscore(data), rtol=0, atol=1e-10)
    np.testing.assert_allclose(new.decision_function(Xte), old.decision_function(Xte),
                               rtol=0, atol=1e-10)
    assert new.formula() == old.formula()
    pd.testing.assert_frame_equal(new.coefficients(), old.coefficients())
    # the old class's in-sample link, made explicit (and visible) with ProbabilityLink
    link = ProbabilityLink(C=1e6).fit(new.radscore(Xtr), ytr)
    np.testing.assert_allclose(new.set_link(link).predict_proba(Xte), old.predict_proba(Xte),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("compartment, k, lam", [("cortical", 8, None), ("cancellous", 5, None),
                                                 ("cortical", 8, 0.04)])
def test_reproduces_ovf_compartment_radscore(compartment, k, lam):
    Xc, y = _data(2, prefix="cortical__")
    Xs, _ = _data(5, prefix="cancellous__")
    X = pd.concat([Xc, Xs], axis=1)
    X["vbmd"] = np.random.default_rng(9).normal(120, 30, len(X))
    X.iloc[:, 7] = 3.0  # a constant column: both drop it
    Xtr, ytr, Xte = X.iloc[:60], y[:60], X.iloc[60:]
    old = LegacyCompartmentRadscore(compartment, k=k, cv=5, lam=lam, random_state=0).fit(Xtr, ytr)
    new = RadscoreModel(scaler="maxabs", k=k, mrmr_order="ranking", prefix=f"{compartment}__",
                        lam=lam, cv=5, rule="min", n_lambdas=40, lambda_min_ratio=0.01,
                        tol=1e-3, max_iter=2000, random_state=0,
                        name=f"radscore_{compartment}").fit(Xtr, ytr)
    pre = len(compartment) + 2
    assert [c[pre:] for c in new.columns_] == [c[pre:] for c in old.columns_]
    assert [c[pre:] for c in new.coef_.index] == list(old.coef_.index)
    np.testing.assert_allclose(new.coef_.to_numpy(), old.coef_.to_numpy(), rtol=0, atol=1e-10)
    for data in (Xtr, Xte):
        pd.testing.assert_frame_equal(new.transform(data), old.transform(data), rtol=0,
                                      atol=1e-10)
    np.testing.assert_allclose(new.scale_.to_numpy(), old.scale_[old.coef_.index].to_numpy())


def test_no_link_by_default_and_oof_link():
    X, y = _data(3)
    model = RadscoreModel(cv=3, n_lambdas=15, compute_path=False, random_state=0)
    m = clone(model).fit(X, y)
    assert not hasattr(m, "predict_proba")  # no probability without a link fitted elsewhere
    np.testing.assert_array_equal(m.predict(X), (m.radscore(X) > 0).astype(int))
    oof = cv_predict(model, X, y, cv=4, rng=0)
    assert oof["score"].notna().all()
    link = ProbabilityLink().fit(oof["score"], oof["y_true"])
    p = m.set_link(link).predict_proba(X)[:, 1]
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(link.intercept_ + link.slope_ * m.radscore(X)))))
    assert not hasattr(clone(m), "link_")  # a clone (permutation refit) carries no link


@pytest.mark.parametrize("scaler", ["zscore", "maxabs", "minmax", None])
def test_scalers_and_raw_coefficients(scaler):
    """The radscore written on raw features (``coefficients(raw=True)``) is the same score."""
    X, y = _data(4)
    m = RadscoreModel(scaler=scaler, k=10, cv=4, random_state=0).fit(X, y)
    t = m.coefficients(raw=True).set_index("feature")["coef"]
    raw = t["intercept"] + X[list(m.coef_.index)].to_numpy() @ t[list(m.coef_.index)].to_numpy()
    np.testing.assert_allclose(m.radscore(X), raw, rtol=1e-9, atol=1e-9)
    assert len(m.pipeline_.named_steps["mrmr"].ranking_) <= 10
    assert m.formula().startswith("Radscore = ")
    m.coef_ = m.coef_.copy()
    m.coef_.iloc[-1] = 1.5e-4  # a near-duplicate the LASSO keeps at ~1e-4 is shown, not "0.000"
    assert " 0.00015 × " in m.formula() and "0.000 ×" not in m.formula()


def test_column_subset_and_errors():
    X, y = _data(6)
    m = RadscoreModel(columns=["f00", "f01", "f02"], lam=0.01).fit(X, y)
    assert set(m.coef_.index) <= {"f00", "f01", "f02"}
    assert m.transform(X[list(m.coef_.index)]).columns.tolist() == ["radscore"]
    with pytest.raises(ValueError, match="no input column"):
        RadscoreModel(prefix="cortical__").fit(X, y)
    with pytest.raises(ValueError, match="scaler"):
        RadscoreModel(scaler="robust").fit(X, y)
    with pytest.raises(ValueError):
        ProbabilityLink().fit([[1.0, 2.0]] * 4, [0, 1, 0, 1])
