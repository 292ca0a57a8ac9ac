"""Tests for vcfnb.selection: fitted on training rows only, cloneable, deterministic, exact."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from scipy import stats
from sklearn.base import clone
from sklearn.feature_selection import SequentialFeatureSelector
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.svm import SVC

from vcfnb import models, selection
from vcfnb.selection import (
    CorrelationFilter,
    LassoSelector,
    MRMRSelector,
    RFESelector,
    SFSSelector,
    UnivariateFilter,
)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny fits: BLAS threads only add contention (2-3x slower on a busy 2-core machine)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def data(rng) -> tuple[pd.DataFrame, np.ndarray]:
    """90 rows × 12 features; f0 and f1 carry the label, f2 ≈ f0 (redundant), rest noise."""
    n = 90
    y = rng.permutation(np.r_[np.zeros(45, int), np.ones(45, int)])
    X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"f{i}" for i in range(12)],
                     index=[f"case{i:03d}" for i in range(n)])
    X["f0"] += 1.2 * y
    X["f1"] -= 0.9 * y
    X["f2"] = X["f0"] + 0.2 * rng.normal(size=n)
    return X, y


FACTORIES = {
    "univariate": lambda: UnivariateFilter(test="auto"),
    "correlation": lambda: CorrelationFilter(threshold=0.9),
    "mrmr": lambda: MRMRSelector(k=4),
    "lasso": lambda: LassoSelector(cv=5, n_lambdas=15, random_state=3),
    "rfe": lambda: RFESelector(cv=3, random_state=3),
    "sfs": lambda: SFSSelector(n_splits=3, n_repeats=1, max_features=3, random_state=3),
}


def _state(est) -> bytes:
    return pickle.dumps({k: v for k, v in vars(est).items() if k.endswith("_")})


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fit_on_train_only_and_transform_keeps_names(name, data):
    X, y = data
    train, test = X.iloc[:60], X.iloc[60:]
    est = FACTORIES[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est.fit(train, y[:60])
    before = _state(est)
    out_test = est.transform(test)
    out_train = est.transform(train)
    assert _state(est) == before  # transforming test rows changes nothing learned
    assert isinstance(out_test, pd.DataFrame)
    assert list(out_test.columns) == list(est.get_feature_names_out()) == list(out_train.columns)
    assert out_test.index.equals(test.index)
    assert est.get_support().sum() == out_test.shape[1] >= 1
    np.testing.assert_array_equal(out_test.to_numpy(), test.loc[:, out_test.columns].to_numpy())
    # a refit on the same training rows ignores whatever the test rows hold
    est2 = FACTORIES[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est2.fit(train.copy(), y[:60])
    np.testing.assert_array_equal(est2.get_support(), est.get_support())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_clone_and_determinism(name, data):
    X, y = data
    est = FACTORIES[name]()
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = est.fit(X, y)
        b = cloned.fit(X, y)
    assert not hasattr(clone(a), "support_")  # clone is unfitted
    np.testing.assert_array_equal(a.get_support(), b.get_support())
    if hasattr(a, "coef_"):
        pd.testing.assert_series_equal(a.coef_, b.coef_)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_arrays_and_set_output(name, data):
    X, y = data
    Xa = X.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est = FACTORIES[name]().fit(Xa, y)
        out = est.transform(Xa)
        assert isinstance(out, np.ndarray) and out.shape[1] == est.get_support().sum()
        assert all(n.startswith("x") for n in est.get_feature_names_out())
        est.set_output(transform="pandas")
        df = est.transform(Xa)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(est.get_feature_names_out())
    with pytest.raises(ValueError, match="features"):
        est.transform(Xa[:, :5])


def test_missing_column_named(data):
    X, y = data
    est = UnivariateFilter(test="ttest").fit(X, y)
    with pytest.raises(ValueError, match="f0"):
        est.transform(X.drop(columns=["f0"]))


def test_pipeline_with_sklearn_scaler_keeps_names(data):
    X, y = data
    pipe = SkPipeline([("z", selection.StandardScaler()), ("u", UnivariateFilter(test="ttest")),
                       ("c", CorrelationFilter(threshold=0.9))]).set_output(transform="pandas")
    out = pipe.fit(X, y).transform(X)
    assert isinstance(out, pd.DataFrame)
    assert set(out.columns) <= set(X.columns)
    assert "f0" in out.columns and "f2" not in out.columns  # f2 is the redundant copy of f0


# --- univariate ------------------------------------------------------------------------------
def test_univariate_pvalues_match_scipy(data):
    X, y = data
    t = UnivariateFilter(test="ttest").fit(X, y)
    ref = stats.ttest_ind(X[y == 1], X[y == 0], axis=0)
    np.testing.assert_allclose(t.pvalues_, ref.pvalue, rtol=1e-12)
    np.testing.assert_allclose(t.results_["statistic"], ref.statistic, rtol=1e-12)
    u = UnivariateFilter(test="mannwhitney").fit(X, y)
    ref_u = stats.mannwhitneyu(X[y == 1], X[y == 0], axis=0, alternative="two-sided")
    np.testing.assert_allclose(u.pvalues_, ref_u.pvalue, rtol=1e-12)
    assert set(t.get_feature_names_out()) >= {"f0", "f1", "f2"}
    assert list(t.results_.columns) == ["feature", "test", "statistic", "p_value", "selected"]


def test_univariate_auto_uses_normality(rng):
    n = 80
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    X = pd.DataFrame({"normal": rng.normal(size=n) + 0.8 * y,
                      "skewed": rng.lognormal(sigma=1.5, size=n) * (1 + y),
                      "const": np.ones(n)})
    res = UnivariateFilter(test="auto").fit(X, y).results_.set_index("feature")
    assert res.loc["normal", "test"] == "ttest"
    assert res.loc["skewed", "test"] == "mannwhitney"
    assert res.loc["const", "p_value"] == 1.0
    p_mw = stats.mannwhitneyu(X["skewed"][y == 1], X["skewed"][y == 0]).pvalue
    assert res.loc["skewed", "p_value"] == pytest.approx(p_mw, rel=1e-12)


def test_univariate_fallback_keeps_k_best(rng):
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    X = pd.DataFrame(rng.normal(size=(40, 6)), columns=list("abcdef"))
    with pytest.warns(UserWarning, match="keeping the 2"):
        f = UnivariateFilter(test="ttest", alpha=1e-9, min_features=2).fit(X, y)
    best = X.columns[np.argsort(f.pvalues_)[:2]]
    assert set(f.get_feature_names_out()) == set(best)
    with pytest.raises(ValueError, match="binary"):
        UnivariateFilter().fit(X, np.arange(40) % 3)


# --- correlation -----------------------------------------------------------------------------
def test_correlation_keeps_more_relevant_of_each_pair(data):
    X, y = data
    f = CorrelationFilter(threshold=0.9).fit(X, y)
    auc = np.array([stats.mannwhitneyu(X[c][y == 1], X[c][y == 0]).statistic / (45 * 45)
                    for c in X.columns])
    np.testing.assert_allclose(f.relevance_, np.abs(auc - 0.5), rtol=1e-12)
    keep, drop = ("f0", "f2") if f.relevance_[0] >= f.relevance_[2] else ("f2", "f0")
    assert keep in f.get_feature_names_out() and drop not in f.get_feature_names_out()
    row = f.dropped_.set_index("feature").loc[drop]
    assert row["correlated_with"] == keep
    assert row["r"] == pytest.approx(np.corrcoef(X["f0"], X["f2"])[0, 1])
    # everything kept is below the threshold pairwise; with a high threshold nothing is dropped
    r = X[f.get_feature_names_out()].corr().abs().to_numpy()
    assert (r[~np.eye(len(r), dtype=bool)] <= 0.9).all()
    assert CorrelationFilter(threshold=0.999).fit(X, y).get_support().all()
    t = CorrelationFilter(threshold=0.9, relevance="t").fit(X, y)
    assert t.get_support().sum() == 11


# --- mRMR ------------------------------------------------------------------------------------
def test_mrmr_matches_library_and_is_quiet(data, capsys):
    from mrmr import mrmr_classif

    X, y = data
    f = MRMRSelector(k=4).fit(X, y)
    ref = mrmr_classif(X=X.reset_index(drop=True), y=pd.Series(y), K=4, show_progress=False,
                       n_jobs=1)
    assert f.ranking_ == ref
    assert set(f.get_feature_names_out()) == set(ref)
    assert f.ranking_[0] in ("f0", "f2")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert MRMRSelector(k=100).fit(X, y).get_support().sum() <= 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mrmr_vectorised_ranking_equals_library_on_wide_data(seed):
    """The default (vectorised) path ranks exactly as ``mrmr_classif`` (moved from the OVF
    study's former ``mrmr_rank`` test): redundant pair, constant column, k < p."""
    from mrmr import mrmr_classif

    g = np.random.default_rng(seed)
    X = pd.DataFrame(g.normal(size=(60, 40)), columns=[f"f{i}" for i in range(40)])
    X["f1"] = X.f0 + 0.3 * g.normal(size=60)  # a redundant pair
    X["f3"] = 1.0  # constant: no relevance, never chosen
    y = (X.f0 + X.f5 - X.f9 + g.normal(size=60) > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constant column is handled quietly
        f = MRMRSelector(k=12).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about the constant column
        ref, rel, _ = mrmr_classif(X=X, y=y, K=12, return_scores=True, show_progress=False,
                                   n_jobs=1)
    assert f.ranking_ == ref
    assert "f3" not in f.ranking_ and np.isnan(f.relevance_["f3"])
    np.testing.assert_allclose(f.relevance_[rel.index], rel, rtol=1e-9)
    assert f.relevance_.drop(rel.index).isna().all()


def test_mrmr_other_settings_use_the_library(data):
    from mrmr import mrmr_classif

    X, y = data
    f = MRMRSelector(k=5, denominator="max").fit(X, y)
    ref = mrmr_classif(X=X.reset_index(drop=True), y=pd.Series(y), K=5, denominator="max",
                       show_progress=False, n_jobs=1)
    assert f.ranking_ == ref


def test_mrmr_order_ranking_passes_columns_in_mrmr_order(data):
    X, y = data
    inp = MRMRSelector(k=4).fit(X, y)
    ranked = MRMRSelector(k=4, order="ranking").fit(X, y)
    assert ranked.ranking_ == inp.ranking_
    assert (ranked.get_support() == inp.get_support()).all()
    assert list(inp.transform(X).columns) == [c for c in X.columns if c in inp.ranking_]
    assert list(ranked.transform(X).columns) == ranked.ranking_
    assert list(ranked.get_feature_names_out()) == ranked.ranking_
    np.testing.assert_array_equal(ranked.transform(X.to_numpy()), X[ranked.ranking_].to_numpy())
    out = clone(ranked).set_output(transform="pandas").fit(X, y).transform(X)
    pd.testing.assert_frame_equal(out, X[ranked.ranking_])
    with pytest.raises(ValueError, match="order"):
        MRMRSelector(order="bogus").fit(X, y)


# --- LASSO -----------------------------------------------------------------------------------
def _glmnet_data() -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(7)
    X = gen.standard_normal((80, 10))
    X = (X - X.mean(0)) / X.std(0)
    eta = 0.3 + 1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.5 * X[:, 2]
    y = (gen.random(80) < 1 / (1 + np.exp(-eta))).astype(int)
    return X, y


# R 4 / glmnet 4.1-6, on the data of _glmnet_data() written with full precision:
#   f <- glmnet(x, y, family = "binomial", lambda = 0.05, standardize = FALSE,
#               thresh = 1e-14, maxit = 1e7); coef(f)
GLMNET_COEF = np.array([0.8143037953, 0.5012640632, -0.4999160268, 0, 0, -0.0614716332,
                        0, 0, 0, 0, 0.0049798528])
#   glmnet(x, y, family = "binomial", standardize = FALSE)$lambda[1]
GLMNET_LAMBDA_MAX = 0.1673324125


def test_lasso_cd_solver_matches_glmnet_and_liblinear():
    # glmnet's own algorithm (vcfnb.lasso_cd): the R coefficients to ~1e-9 at a tight tolerance
    X, y = _glmnet_data()
    cd = LassoSelector(lam=0.05, solver="cd", tol=1e-20).fit(X, y)
    np.testing.assert_allclose(np.r_[cd.intercept_, cd.estimator_.coef_.ravel()], GLMNET_COEF,
                               atol=1e-9)
    np.testing.assert_array_equal(cd.get_support(), GLMNET_COEF[1:] != 0)
    assert cd.estimator_.predict_proba(X).shape == (80, 2)  # a usable fitted model
    # lambda by CV along the path: the same lambda and features as liblinear at default tolerance
    gen = np.random.default_rng(3)
    Xc = pd.DataFrame(gen.standard_normal((120, 40)), columns=[f"f{i}" for i in range(40)])
    yc = (Xc.f0 - Xc.f1 + 0.5 * Xc.f2 + gen.normal(size=120) > 0).astype(int)
    a = LassoSelector(cv=5, random_state=0, n_lambdas=30).fit(Xc, yc)
    b = LassoSelector(cv=5, random_state=0, n_lambdas=30, solver="cd").fit(Xc, yc)
    assert a.lambda_ == b.lambda_ and list(a.coef_.index) == list(b.coef_.index)
    np.testing.assert_allclose(b.coef_.to_numpy(), a.coef_.to_numpy(), atol=2e-3)
    assert b.path_ is not None and len(b.path_) == 30 * 40
    # deterministic: the same fit twice
    pd.testing.assert_series_equal(b.coef_, clone(b).fit(Xc, yc).coef_)
    with pytest.raises(ValueError, match="'cd'"):
        LassoSelector(solver="bogus").fit(Xc, yc)


def test_lasso_cd_thresh_is_glmnets_relative_criterion(monkeypatch):
    """``thresh`` is glmnet's: the absolute tolerance is thresh times the null deviance per
    observation of the fit's rows (glmnet's Fortran: ``shr = thresh * dev0``, weights summing
    to 1); at glmnet's default 1e-7 the fit stays within ~1e-3 of R's tight coefficients."""
    import vcfnb.lasso_cd as lcd

    X, y = _glmnet_data()
    seen = []
    real = lcd.l1_logistic_path
    monkeypatch.setattr(lcd, "l1_logistic_path",
                        lambda *a, **k: seen.append(k["tol"]) or real(*a, **k))
    fit = LassoSelector(lam=0.05, solver="cd", thresh=1e-7).fit(X, y)
    ybar = y.mean()
    dev0 = -(ybar * np.log(ybar) + (1 - ybar) * np.log(1 - ybar))
    assert seen and all(t == pytest.approx(1e-7 * dev0, rel=1e-12) for t in seen)
    np.testing.assert_allclose(np.r_[fit.intercept_, fit.estimator_.coef_.ravel()], GLMNET_COEF,
                               atol=1e-3)
    seen.clear()
    LassoSelector(lam=0.05, solver="cd").fit(X, y)  # without thresh: the absolute tol
    assert seen and set(seen) == {1e-10}
    for bad in (dict(thresh=1e-7), dict(thresh=0.0, solver="cd")):  # liblinear ignores it: say so
        with pytest.raises(ValueError, match="thresh"):
            LassoSelector(lam=0.05, **bad).fit(X, y)


def test_lasso_cd_glmnet_thresh_needs_fewer_passes_on_correlated_features():
    """On correlated features with n < p (radiomics), glmnet's default threshold stops the path
    with far fewer coordinate-descent passes than tol 1e-10, at nearly the same objective."""
    from vcfnb.lasso_cd import l1_logistic_path

    gen = np.random.default_rng(4)
    X = gen.standard_normal((60, 10)) @ gen.standard_normal((10, 150))
    X = (X + 0.2 * gen.standard_normal(X.shape) - X.mean(0)) / X.std(0)
    y = (X[:, 0] + gen.normal(size=60) > 0).astype(float)
    lam = np.geomspace(np.abs(X.T @ (y - y.mean())).max() / 60, 0.01, 20)
    dev0 = -(y.mean() * np.log(y.mean()) + (1 - y.mean()) * np.log(1 - y.mean()))

    def objective(c, b0):
        eta = X @ c + b0
        return np.mean(np.logaddexp(0, eta) - y * eta) + lam[-1] * np.abs(c).sum()

    c_t, b_t, passes_t = l1_logistic_path(X, y, lam, tol=1e-10)
    c_g, b_g, passes_g = l1_logistic_path(X, y, lam, tol=1e-7 * dev0)
    assert passes_g.sum() * 3 < passes_t.sum()
    assert abs(objective(c_g[-1], b_g[-1]) - objective(c_t[-1], b_t[-1])) < 1e-5


def test_lasso_cd_path_is_optimal_along_the_grid():
    # every lambda of the warm-started path satisfies the lasso's optimality (KKT) conditions
    from vcfnb.lasso_cd import l1_logistic_path

    gen = np.random.default_rng(11)
    Z = gen.standard_normal((90, 8))
    X = Z @ gen.standard_normal((8, 60)) + 0.3 * gen.standard_normal((90, 60))  # correlated
    X = (X - X.mean(0)) / X.std(0)
    y = (X[:, 0] + gen.normal(size=90) > 0).astype(float)
    lam = np.geomspace(np.abs(X.T @ (y - y.mean())).max() / 90, 0.01, 15)
    coefs, b0, _ = l1_logistic_path(X, y, lam, tol=1e-14)
    for k in range(lam.size):
        r = y - 1 / (1 + np.exp(-(X @ coefs[k] + b0[k])))
        g = X.T @ r / 90
        nz = coefs[k] != 0
        assert abs(r.mean()) < 1e-6  # unpenalised intercept
        np.testing.assert_allclose(g[nz], lam[k] * np.sign(coefs[k][nz]), atol=1e-5)
        assert np.all(np.abs(g[~nz]) <= lam[k] + 1e-5)


def test_lasso_fixed_lambda_matches_glmnet():
    X, y = _glmnet_data()
    exact = LassoSelector(lam=0.05, solver="saga", tol=1e-10, random_state=0).fit(X, y)
    coef = np.r_[exact.intercept_, exact.estimator_.coef_.ravel()]
    np.testing.assert_allclose(coef, GLMNET_COEF, atol=1e-6)
    fast = LassoSelector(lam=0.05, random_state=0).fit(X, y)  # liblinear default
    np.testing.assert_allclose(np.r_[fast.intercept_, fast.estimator_.coef_.ravel()],
                               GLMNET_COEF, atol=2e-3)
    np.testing.assert_array_equal(fast.get_support(), GLMNET_COEF[1:] != 0)
    assert exact.lambdas_[0] == pytest.approx(GLMNET_LAMBDA_MAX, rel=1e-8)
    assert exact.cv_results_ is None and exact.lambda_ == 0.05
    assert exact.C_ == pytest.approx(1 / (0.05 * 80))
    # C and lambda are the same knob
    via_c = LassoSelector(C=selection.lambda_to_C(0.05, 80), random_state=0).fit(X, y)
    assert via_c.lambda_ == pytest.approx(0.05)
    pd.testing.assert_series_equal(via_c.coef_, fast.coef_)
    assert selection.C_to_lambda(selection.lambda_to_C(0.13, 112), 112) == pytest.approx(0.13)
    with pytest.raises(ValueError, match="either"):
        LassoSelector(lam=0.1, C=1.0).fit(X, y)


def test_lasso_cv_path_and_rules(data):
    X, y = data
    sel = LassoSelector(cv=5, n_lambdas=20, random_state=0).fit(X, y)
    assert sel.path_.shape == (20 * 12, 4)
    assert list(sel.path_.columns) == ["lambda", "log_lambda", "feature", "coef"]
    assert list(sel.cv_results_.columns) == ["lambda", "log_lambda", "mean_score", "sd_score",
                                             "se_score", "n_nonzero"]
    assert len(sel.cv_results_) == 20
    assert sel.cv_results_["n_nonzero"].iloc[0] == 0  # lambda_max zeroes everything
    assert np.all(np.diff(sel.lambdas_) < 0)
    best = sel.cv_results_["mean_score"].idxmax()
    assert sel.lambda_ == sel.lambda_min_ == sel.cv_results_["lambda"][best]
    assert sel.lambda_1se_ >= sel.lambda_min_
    assert set(sel.coef_.index) == set(sel.get_feature_names_out())
    assert (sel.coef_ != 0).all()
    assert {"f0", "f1"} & set(sel.coef_.index)
    # the path at lambda_ equals the final fit
    at = sel.path_[sel.path_["lambda"] == sel.lambda_].set_index("feature")["coef"]
    np.testing.assert_allclose(at[sel.coef_.index], sel.coef_, rtol=1e-6, atol=1e-8)
    one_se = LassoSelector(cv=5, n_lambdas=20, rule="1se", random_state=0).fit(X, y)
    assert one_se.lambda_ == sel.lambda_1se_
    assert one_se.get_support().sum() <= sel.get_support().sum()
    dev = LassoSelector(cv=5, n_lambdas=20, scoring="deviance", random_state=0).fit(X, y)
    assert dev.lambda_ == dev.cv_results_["lambda"][dev.cv_results_["mean_score"].idxmin()]


def test_lasso_always_keeps_a_feature(data):
    X, y = data
    with pytest.warns(UserWarning, match="non-zero"):
        sel = LassoSelector(lam=10.0, random_state=0).fit(X, y)
    assert sel.fallback_ and sel.get_support().sum() >= 1
    assert sel.lambda_ < 10.0 and sel.lambda_cv_ == 10.0
    assert (sel.coef_ != 0).all()


# --- RFE -------------------------------------------------------------------------------------
def test_rfe_cv_curve(data):
    X, y = data
    sel = RFESelector(cv=5, random_state=0).fit(X, y)
    res = sel.cv_results_
    assert list(res.columns) == ["n_features", "mean_score", "sd_score"]
    assert res["n_features"].tolist() == list(range(1, 13))
    assert sel.n_features_ == sel.get_support().sum()
    assert res.loc[res["n_features"] == sel.n_features_, "mean_score"].iloc[0] == pytest.approx(
        res["mean_score"].max())
    assert "f0" in sel.get_feature_names_out() or "f2" in sel.get_feature_names_out()
    assert list(sel.coef_.index) == list(sel.get_feature_names_out())
    assert (sel.ranking_[sel.get_support()] == 1).all()


# --- SFS -------------------------------------------------------------------------------------
def test_sfs_history_and_tolerance(data):
    X, y = data
    sfs = SFSSelector(n_splits=3, n_repeats=2, tol=1e-6, random_state=0).fit(X, y)
    h = sfs.history_
    assert list(h.columns) == ["step", "feature", "score", "score_sd", "gain", "n_features",
                               "accepted"]
    acc = h[h["accepted"]]
    assert acc["feature"].tolist() == sfs.ranking_
    assert set(sfs.ranking_) == set(sfs.get_feature_names_out())
    assert (acc["gain"].iloc[1:] >= 1e-6).all()
    assert np.all(np.diff(acc["score"]) > 0)
    if not h["accepted"].iloc[-1]:
        assert h["gain"].iloc[-1] < 1e-6
    assert sfs.ranking_[0] in ("f0", "f1", "f2")
    capped = SFSSelector(n_splits=3, n_repeats=2, max_features=2, tol=-1.0,
                         random_state=0).fit(X, y)
    assert len(capped.ranking_) == 2 and capped.ranking_ == sfs.history_["feature"].tolist()[:2]


def test_sfs_equals_sklearn_sequential_feature_selector(data):
    X, y = data
    X = X.iloc[:, :7]
    cv = RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=5)
    ref = SequentialFeatureSelector(SVC(kernel="rbf"), n_features_to_select="auto", tol=1e-6,
                                    direction="forward", scoring="roc_auc", cv=cv).fit(X, y)
    ours = SFSSelector(n_splits=3, n_repeats=2, tol=1e-6, random_state=5).fit(X, y)
    np.testing.assert_array_equal(ours.get_support(), ref.get_support())


def test_sfs_parallel_is_identical(data, monkeypatch):
    """n_jobs=2 scores the candidates of every step in two batches on vcfnb's worker pool
    (vcfnb.parallel.pmap) and selects the same features with the same scores as n_jobs=1, on
    the fast kernel path and on the generic estimator path."""
    X, y = data
    calls: list[tuple[int, int]] = []
    real = selection.pmap

    def spy(fn, items, **kw):
        calls.append((len(items), kw["n_jobs"]))
        return real(fn, items, **kw)

    monkeypatch.setattr(selection, "pmap", spy)
    for est in (None, SVC(kernel="rbf")):
        kw = dict(estimator=est, n_splits=3, n_repeats=1, max_features=3, random_state=1)
        a = SFSSelector(**kw, n_jobs=1).fit(X, y)
        assert calls == []  # one job: in this process
        b = SFSSelector(**kw, n_jobs=2).fit(X, y)
        assert calls == [(2, 2)] * 3, calls  # one pmap per step, one batch per worker
        calls.clear()
        assert a.ranking_ == b.ranking_ and len(a.history_) == 3
        np.testing.assert_array_equal(a.support_, b.support_)
        pd.testing.assert_frame_equal(a.history_, b.history_, check_exact=True)


def _sfs_in_a_worker(item) -> tuple[list, pd.DataFrame, bool, int]:
    from vcfnb import parallel

    X, y = item
    sfs = SFSSelector(n_splits=3, n_repeats=1, max_features=2, random_state=1, n_jobs=2).fit(X, y)
    return sfs.ranking_, sfs.history_, parallel._POOL is None, parallel.resolve_n_jobs(2)


def test_sfs_inside_a_worker_starts_no_pool(data):
    """An SFS asking for 2 jobs inside one of vcfnb's workers (as in a permutation of
    permutation_test) runs in that worker -- no pool of pools -- with the same result."""
    from vcfnb import parallel

    X, y = data
    ref = SFSSelector(n_splits=3, n_repeats=1, max_features=2, random_state=1, n_jobs=1).fit(X, y)
    for ranking, history, no_pool, n in parallel.pmap(_sfs_in_a_worker, [(X, y)] * 2, n_jobs=2):
        assert no_pool and n == 1
        assert ranking == ref.ranking_
        pd.testing.assert_frame_equal(history, ref.history_, check_exact=True)


# --- oversampling ----------------------------------------------------------------------------
def test_oversampling_only_at_fit_time(rng):
    seen: list[int] = []

    class Count(UnivariateFilter):
        def fit(self, X, y):
            seen.append(int(np.sum(y == 1)) - int(np.sum(y == 0)))
            return super().fit(X, y)

        def transform(self, X):
            seen.append(len(X))
            return super().transform(X)

    y = np.r_[np.zeros(30, int), np.ones(12, int)]
    X = pd.DataFrame(rng.normal(size=(42, 5)) + y[:, None], columns=list("abcde"))
    pipe = models.make_radiomics_pipeline(["oversample", "zscore", Count(test="ttest"), "LR"],
                                          rng=0)
    assert isinstance(pipe, selection.Pipeline)
    pipe.fit(X, y)
    assert seen[0] == 0  # balanced classes while fitting the filter
    seen.clear()
    proba = pipe.predict_proba(X)
    assert proba.shape == (42, 2) and seen == [42]  # no resampling at predict time
    assert list(pipe[:-1].get_feature_names_out()) == list(pipe[-1].feature_names_in_)


def test_sfs_fast_kernel_path_equals_generic_svc(rng):
    """The precomputed-kernel libsvm path gives the same history as SVC(kernel="rbf")."""
    import numpy as np
    import pandas as pd
    from sklearn.svm import SVC

    from vcfnb.selection import SFSSelector, _RBFKernelScorer

    X = pd.DataFrame(rng.normal(size=(48, 12)), columns=[f"f{i}" for i in range(12)])
    y = ((X.f3 - 0.8 * X.f7 + rng.normal(scale=1.0, size=48)) > 0).astype(int)
    for gamma in ("scale", "auto", 0.3):
        fast = SFSSelector(n_splits=4, n_repeats=2, gamma=gamma, C=2.0, max_features=3,
                           random_state=5).fit(X, y)
        slow = SFSSelector(estimator=SVC(kernel="rbf", gamma=gamma, C=2.0), n_splits=4,
                           n_repeats=2, max_features=3, random_state=5).fit(X, y)
        assert fast.ranking_ == slow.ranking_
        np.testing.assert_allclose(fast.history_.score, slow.history_.score, atol=1e-9)
    assert _RBFKernelScorer._verified is True  # libsvm decision values equal SVC's


def test_shapiro_pvalues_equal_scipy_column_by_column():
    from scipy import stats

    from vcfnb.selection import shapiro_pvalues

    g = np.random.default_rng(3)
    A = np.column_stack([g.normal(size=57), g.gamma(1.5, size=57), g.integers(0, 4, 57),
                         np.r_[np.zeros(56), 1.0], np.full(57, 2.5), g.uniform(size=57)])
    got = shapiro_pvalues(A)
    want = [stats.shapiro(A[:, j]).pvalue if np.ptp(A[:, j]) > 0 else 0.0
            for j in range(A.shape[1])]
    assert np.array_equal(got, want)
    assert got[4] == 0.0 and 0.0 < got[0] <= 1.0
    with pytest.raises(ValueError, match="at least 3 rows"):
        shapiro_pvalues(A[:2])


def test_lasso_screening_gives_the_full_problem_solution():
    """Strong-rule screening + KKT check must reproduce the unscreened fit on a wide table
    (the case it exists for: thousands of features, tens selected)."""
    g = np.random.default_rng(11)
    n, p = 90, 600
    X = pd.DataFrame(g.normal(size=(n, p)), columns=[f"f{i}" for i in range(p)])
    y = (X["f0"] - 0.8 * X["f1"] + 0.6 * X["f2"] + g.normal(size=n) > 0).astype(int)
    full = LassoSelector(cv=5, n_lambdas=20, random_state=0, screening=False).fit(X, y)
    fast = LassoSelector(cv=5, n_lambdas=20, random_state=0, screening=True).fit(X, y)
    assert fast.lambda_ == full.lambda_
    assert list(fast.coef_.index) == list(full.coef_.index)
    np.testing.assert_allclose(fast.coef_, full.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fast.cv_results_["mean_score"], full.cv_results_["mean_score"],
                               atol=0.02)
    assert fast.path_["coef"].ne(0).sum() == pytest.approx(full.path_["coef"].ne(0).sum(), abs=3)
    # the final model predicts with all input columns
    assert fast.estimator_.coef_.shape == (1, p)
    np.testing.assert_allclose(fast.estimator_.predict_proba(X.to_numpy())[:, 1],
                               full.estimator_.predict_proba(X.to_numpy())[:, 1], atol=1e-3)
    # fixed lambda too
    a = LassoSelector(lam=0.05, screening=False, random_state=0).fit(X, y)
    b = LassoSelector(lam=0.05, screening=True, random_state=0).fit(X, y)
    assert list(a.coef_.index) == list(b.coef_.index)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-3, atol=1e-4)


def test_lasso_cv_skips_folds_with_one_class():
    """Small data, many folds: held-out folds with one class have no AUC and are left out of
    the CV mean instead of breaking the fit (vcf's stacked DLR score on the smoke cohort)."""
    g = np.random.default_rng(2)
    X = pd.DataFrame(g.normal(size=(22, 30)), columns=[f"f{i}" for i in range(30)])
    y = np.r_[np.ones(6), np.zeros(16)].astype(int)
    X["f0"] += 1.5 * y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = LassoSelector(cv=10, n_lambdas=10, random_state=0).fit(X, y)
    assert np.isfinite(sel.cv_results_["mean_score"]).all()
    assert sel.lambda_1se_ >= sel.lambda_min_ and len(sel.coef_) >= 1


# R glmnet 4.1-6 on the two data sets built below (written to CSV with pandas, read with read.csv):
#   f <- glmnet(x, y, family = "binomial", standardize = FALSE, nlambda = 25,
#               lambda.min.ratio = 1e-4, thresh = 1e-14)        # a: 20 of 25 lambdas kept
#   f <- glmnet(x, y, family = "binomial", standardize = FALSE, nlambda = 100,
#               lambda.min.ratio = 1e-6, thresh = 1e-14)        # b: 34 of 100 lambdas kept
#   f$lambda[1]: a 0.218046014385, b 0.158043312515
#   tail(f$dev.ratio, 2): a 0.998790214 0.999175848 (> devmax 0.999: saturated),
#                         b 0.072371144 0.072380348 (gain < fdev 1e-5: a plateau)
def test_lasso_cd_path_stop_ends_where_glmnet_ends_its_own_path():
    from scipy.special import expit

    from vcfnb.lasso_cd import l1_logistic_path

    g = np.random.default_rng(20261201)
    Xa = g.normal(size=(40, 300))
    ya = (g.random(40) < 0.5).astype(int)
    Xb = g.normal(size=(150, 3))
    yb = (g.random(150) < 1 / (1 + np.exp(-0.5 * Xb[:, 0]))).astype(int)
    cases = ((Xa, ya, 25, 1e-4, 20, 0.218046014385, (0.998790214, 0.999175848)),
             (Xb, yb, 100, 1e-6, 34, 0.158043312515, (0.072371144, 0.072380348)))
    for X, y, nl, ratio, kept, lam_max, last_two in cases:
        kw = {"solver": "cd", "tol": 1e-14, "n_lambdas": nl, "lambda_min_ratio": ratio, "cv": 3,
              "scoring": "deviance", "random_state": 0}
        sel = LassoSelector(path_stop=True, **kw).fit(X, y)
        assert sel.path_stopped_ == kept and sel.lambdas_.size == kept
        assert len(sel.cv_results_) == kept  # the folds score the grid the path kept
        assert sel.lambdas_[0] == pytest.approx(lam_max, rel=1e-9)
        coefs, b0, _ = l1_logistic_path(X, y, sel.lambdas_, tol=1e-14)
        p0 = y.mean()
        dev0 = -2 * np.sum(y * np.log(p0) + (1 - y) * np.log(1 - p0))
        ratios = [1 + 2 * np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / dev0
                  for p in (expit(X @ coefs[k] + b0[k]) for k in (-2, -1))]
        np.testing.assert_allclose(ratios, last_two, atol=1e-6)
        # without path_stop: the whole grid, and the kept part of the CV curve is the same
        whole = LassoSelector(path_stop=False, **kw).fit(X, y)
        assert whole.path_stopped_ is None and whole.lambdas_.size == nl
        np.testing.assert_array_equal(whole.cv_results_["mean_score"].to_numpy()[:kept],
                                      sel.cv_results_["mean_score"].to_numpy())
