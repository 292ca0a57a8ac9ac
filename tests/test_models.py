"""Tests for vcfnb.models: classifiers, radscores, patient-level split, CV, permutation test."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_config
from threadpoolctl import threadpool_limits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from vcfnb import models, selection


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny fits: BLAS threads only add contention (2-3x slower on a busy 2-core machine)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def xy(rng) -> tuple[pd.DataFrame, np.ndarray]:
    n = 80
    y = rng.permutation(np.r_[np.zeros(40, int), np.ones(40, int)])
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=["a", "b", "c", "d", "e"],
                     index=[f"p{i:03d}" for i in range(n)])
    X["a"] += 1.5 * y
    X["b"] -= 1.0 * y
    return X, y


@pytest.fixture
def rois(rng) -> pd.DataFrame:
    """40 patients (16 positive) with 1–4 ROI rows each, label constant per patient."""
    rows = []
    for i in range(40):
        label = int(i < 16)
        for level in ["L1", "L2", "L3", "L4"][: 1 + i % 4]:
            rows.append({"patient_id": f"P{i:02d}", "roi": level, "outcome": label,
                         "x": rng.normal() + label})
    return pd.DataFrame(rows)


# --- classifiers -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", models.CLASSIFIERS)
def test_each_classifier_fits_deterministically(name, xy):
    X, y = xy
    grid = models.param_grid(name)
    assert grid and all(len(v) >= 2 for v in grid.values())
    first = {k: v[0] for k, v in grid.items()}
    a = models.make_classifier(name, random_state=1).set_params(**first)
    b = models.make_classifier(name, random_state=1).set_params(**first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pa = a.fit(X, y).predict_proba(X)[:, 1]
        pb = b.fit(X, y).predict_proba(X)[:, 1]
    np.testing.assert_array_equal(pa, pb)
    assert roc_auc_score(y, pa) > 0.8
    if "n_jobs" in a.get_params():
        assert a.get_params()["n_jobs"] in (None, 1)  # None = 1 outside a joblib context


def test_unknown_classifier():
    with pytest.raises(ValueError, match="unknown classifier 'SVR'"):
        models.make_classifier("SVR")
    assert type(models.make_classifier("lightgbm")).__name__ == "LGBMClassifier"


def test_tune_and_fit_classifiers(xy, capsys):
    X, y = xy
    lr = models.tune("LR", X, y, cv=3, rng=0)
    assert lr.C in models.param_grid("LR")["C"] and hasattr(lr, "coef_")
    again = models.tune("LR", X, y, cv=3, rng=0)
    assert again.C == lr.C
    fitted = models.fit_classifiers(X, y, ["KNN", "XGBoost", "LightGBM"], cv=3, rng=0)
    assert list(fitted) == ["KNN", "XGBoost", "LightGBM"]
    scores = models.predict_scores(fitted, X)
    assert list(scores.columns) == ["KNN", "XGBoost", "LightGBM"]
    assert scores.index.equals(X.index)
    assert scores.apply(lambda s: s.between(0, 1).all()).all()
    out = capsys.readouterr()
    assert "Warning" not in out.out and "[LightGBM]" not in out.out  # quiet
    untuned = models.fit_classifiers(X, y, ["LR"], tuned=False, rng=0)
    assert untuned["LR"].C == 1.0


# --- radscore --------------------------------------------------------------------------------
def test_radscore_formula_text(xy):
    X, y = xy
    m = LogisticRegression().fit(X[["a", "b"]], y)
    m.intercept_ = np.array([0.1234])
    m.coef_ = np.array([[0.4561, -0.789]])
    assert models.radscore_formula(m) == "Radscore = 0.123 + 0.456 × a − 0.789 × b"
    assert models.radscore_formula(m, ["x_1", "x_2"], name="DLR score", digits=2) == (
        "DLR score = 0.12 + 0.46 × x_1 − 0.79 × x_2")
    m.intercept_ = np.array([-2.0])
    assert models.radscore_formula(m).startswith("Radscore = −2.000 + ")
    m.coef_ = np.array([[0.4561, -0.000123]])  # a kept near-duplicate: not printed as "0.000"
    assert models.radscore_formula(m).endswith("+ 0.456 × a − 0.000123 × b")
    m.coef_ = np.array([[0.4561, -0.789]])
    table = models.radscore_coefficients(m)
    assert table["term"].tolist() == ["(Intercept)", "a", "b"]
    s = models.radscore(m, X[["a", "b"]])
    np.testing.assert_allclose(s, -2.0 + 0.4561 * X["a"] - 0.789 * X["b"])
    assert s.name == "radscore" and s.index.equals(X.index)


def test_radscore_from_pipeline_and_raw_units(xy):
    X, y = xy
    pipe = models.make_radiomics_pipeline(
        ["zscore", ("lasso", {"cv": 5, "n_lambdas": 15}), ("LR", {"C": 100.0})], rng=0).fit(X, y)
    names = list(pipe[:-1].get_feature_names_out())
    formula = models.radscore_formula(pipe)
    assert all(n in formula for n in names)
    s = models.radscore(pipe, X)
    np.testing.assert_allclose(s, pipe.decision_function(X))
    # back-transform to raw units: same scores from the raw features
    raw = models.radscore_coefficients(pipe, scaler=pipe.named_steps["zscore"])
    b0, b = raw["coefficient"].iloc[0], raw.set_index("term")["coefficient"].iloc[1:]
    np.testing.assert_allclose(b0 + X[b.index].to_numpy() @ b.to_numpy(), s, rtol=1e-10)
    # the papers' LASSO radscore straight from the selector
    lasso = pipe.named_steps["lasso"]
    ls = models.radscore(lasso, pipe.named_steps["zscore"].transform(X))
    np.testing.assert_allclose(ls, lasso.estimator_.decision_function(
        pipe.named_steps["zscore"].transform(X).to_numpy()), rtol=1e-10)
    text = models.radscore_formula(lasso)
    assert re.match(r"^Radscore = −?\d+\.\d{3}( [+−] \d+\.\d{3} × \w+)+$", text)
    with pytest.raises(TypeError, match="linear"):
        models.radscore_formula(models.make_classifier("KNN").fit(X, y))


def test_aggregate_by_patient():
    s = pd.Series([1.0, 2.0, 6.0, 4.0], name="radscore")
    out = models.aggregate_by_patient(s, ["b", "a", "a", "b"])
    assert out.to_dict() == {"a": 4.0, "b": 2.5} and out.name == "radscore"
    assert out.index.name == "patient_id"
    assert models.aggregate_by_patient(s, ["b", "a", "a", "b"], how="max").to_dict() == {
        "a": 6.0, "b": 4.0}
    with pytest.raises(ValueError, match="patient ids"):
        models.aggregate_by_patient(s, ["a"])


# --- split -----------------------------------------------------------------------------------
def test_split_by_patient_never_straddles(rois):
    for seed in range(5):
        train, test = models.split_by_patient(rois, "outcome", test_size=0.3, rng=seed)
        assert not set(train.patient_id) & set(test.patient_id)
        assert len(train) + len(test) == len(rois)
        assert test.patient_id.nunique() == 12  # 30% of 40 patients
        assert test.groupby("patient_id")["outcome"].first().sum() in (4, 5)  # stratified 16/40
    a = models.split_by_patient(rois, rng=3)
    b = models.split_by_patient(rois, rng=3)
    pd.testing.assert_frame_equal(a[1], b[1])


def test_split_by_patient_on_cases_is_train_test_split(rois):
    cases = rois.groupby("patient_id", as_index=False)["outcome"].first()
    train, test = models.split_by_patient(cases, rng=11)
    _, ref_test = train_test_split(cases.patient_id.to_numpy(), test_size=0.3,
                                   stratify=cases.outcome.to_numpy(), random_state=11)
    assert set(test.patient_id) == set(ref_test)
    bad = rois.copy()
    bad.loc[bad.index[1], "outcome"] = 1 - bad.loc[bad.index[1], "outcome"]  # P01 has 2 rows
    with pytest.raises(ValueError, match="P01"):
        models.split_by_patient(bad)


# --- CV --------------------------------------------------------------------------------------
def test_cv_predict_out_of_fold(xy, rois):
    X, y = xy
    pred = models.cv_predict(models.make_classifier("LR"), X, y, cv=5, rng=0)
    assert pred.index.equals(X.index) and pred["fold"].between(0, 4).all()
    assert pred["score"].notna().all()
    np.testing.assert_array_equal(pred["y_true"], y)
    assert roc_auc_score(pred["y_true"], pred["score"]) > 0.8
    again = models.cv_predict(models.make_classifier("LR"), X, y, cv=5, rng=0)
    pd.testing.assert_frame_equal(pred, again)
    # groups: rows of one patient share a fold
    Xr = rois[["x"]]
    g = models.cv_predict(models.make_classifier("LR"), Xr, rois["outcome"], cv=4, rng=0,
                          groups=rois["patient_id"])
    assert (g.groupby(rois["patient_id"].to_numpy())["fold"].nunique() == 1).all()


def test_nested_cv(xy):
    X, y = xy
    pipe = models.make_radiomics_pipeline(["zscore", "LR"], rng=0)
    res = models.nested_cv(pipe, {"lr__C": [0.01, 1.0]}, X, y, outer_cv=3, inner_cv=3, rng=0)
    assert list(res.folds.columns) == ["fold", "auc", "best_params", "inner_score"]
    assert len(res.folds) == 3
    assert all(p["lr__C"] in (0.01, 1.0) for p in res.folds["best_params"])
    assert res.auc == pytest.approx(roc_auc_score(res.predictions["y_true"],
                                                  res.predictions["score"]))
    assert res.auc > 0.8


# --- permutation test ------------------------------------------------------------------------
def _small_pipe():
    return models.make_radiomics_pipeline(
        ["zscore", ("univariate", {"test": "ttest"}), "LR"], rng=0)


def test_permutation_test_signal_vs_noise(rng):
    n = 60
    y = rng.permutation(np.r_[np.zeros(30, int), np.ones(30, int)])
    noise = pd.DataFrame(rng.normal(size=(n, 20)), columns=[f"f{i}" for i in range(20)])
    signal = noise.copy()
    signal["f0"] += 2.0 * y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        strong = models.permutation_test(_small_pipe(), signal, y, cv=3, n_permutations=19, rng=1)
        null = models.permutation_test(_small_pipe(), noise, y, cv=3, n_permutations=19, rng=1)
    assert strong.design == "cv" and strong.null_auc.shape == (19,)
    assert strong.observed_auc > 0.85 and strong.p_value == pytest.approx(1 / 20)
    assert null.p_value > 0.1
    assert abs(np.mean(strong.null_auc) - 0.5) < 0.15  # the pipeline does not leak
    expected = (1 + np.sum(null.null_auc >= null.observed_auc)) / 20
    assert null.p_value == pytest.approx(expected)
    summary = strong.summary()
    assert list(summary.columns) == ["design", "observed_auc", "null_mean", "null_sd", "null_q95",
                                     "n_permutations", "p_value"]


def test_permutation_test_train_test_custom_and_groups(rng, rois):
    n = 80
    y = rng.permutation(np.r_[np.zeros(40, int), np.ones(40, int)])
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=list("abcdef"))
    X["a"] += 2.0 * y
    tr, te = np.arange(50), np.arange(50, 80)
    warnings.simplefilter("ignore", UserWarning)  # filter fallback on shuffled labels
    res = models.permutation_test(_small_pipe, X.iloc[tr], y[tr], X_test=X.iloc[te],
                                  y_test=y[te], n_permutations=9, rng=2)
    assert res.design == "train_test" and res.p_value == pytest.approx(0.1)
    with parallel_config(backend="threading"):  # fast here; loky processes give the same
        again = models.permutation_test(_small_pipe, X.iloc[tr], y[tr], X_test=X.iloc[te],
                                        y_test=y[te], n_permutations=9, rng=2, n_jobs=2)
    np.testing.assert_array_equal(res.null_auc, again.null_auc)  # independent of n_jobs

    seen = []

    def evaluate(est, X_, labels):
        seen.append(labels.copy())
        return float(np.mean(labels[:5]))

    custom = models.permutation_test(_small_pipe(), X, y, evaluate=evaluate, n_permutations=5,
                                     rng=0)
    assert custom.design == "custom" and len(seen) == 6
    assert all(sorted(s) == sorted(y) for s in seen)

    # with groups, labels are shuffled between patients, never within one
    labels_seen = []

    def by_patient(est, X_, labels):
        labels_seen.append(labels)
        return 0.5

    models.permutation_test(_small_pipe(), rois[["x"]], rois["outcome"], evaluate=by_patient,
                            groups=rois["patient_id"], n_permutations=5, rng=0)
    for labels in labels_seen:
        per = pd.Series(labels).groupby(rois["patient_id"].to_numpy()).nunique()
        assert (per == 1).all()
        assert pd.Series(labels).groupby(rois["patient_id"].to_numpy()).first().sum() == 16


# --- pipeline builder ------------------------------------------------------------------------
def test_make_radiomics_pipeline(xy):
    X, y = xy
    pipe = models.make_radiomics_pipeline(
        ["oversample", "maxabs", ("mrmr", {"k": 3}), ("lasso", {"cv": 3, "n_lambdas": 10}),
         "correlation", "correlation", "ExtraTrees"], rng=7)
    assert [n for n, _ in pipe.steps] == ["oversample", "maxabs", "mrmr", "lasso", "correlation",
                                          "correlation_2", "extratrees"]
    assert pipe.named_steps["lasso"].random_state == 7
    assert pipe.named_steps["extratrees"].random_state == 7
    assert pipe.named_steps["oversample"].random_state == 7
    pipe.fit(X, y)
    assert len(pipe[:-1].get_feature_names_out()) <= 3
    gen_pipe = models.make_radiomics_pipeline(["zscore", "SVM"], rng=np.random.default_rng(0))
    assert isinstance(gen_pipe.named_steps["svm"].estimator.random_state, int)
    custom = models.make_radiomics_pipeline([selection.StandardScaler(),
                                             LogisticRegression(random_state=3)], rng=0)
    assert custom.steps[1][1].random_state == 3
    with pytest.raises(ValueError, match="unknown pipeline step 'pca'"):
        models.make_radiomics_pipeline(["pca"])


# ---- feature contributions (issue 20)
def _contrib_data(seed: int = 0):
    g = np.random.default_rng(seed)
    X = pd.DataFrame(g.normal(size=(80, 5)), columns=[f"f{i}" for i in range(5)])
    y = (1.5 * X["f0"] - X["f2"] + 0.5 * g.normal(size=80) > 0).astype(int)
    return X, y


def test_feature_contributions_linear_is_exact():
    X, y = _contrib_data()
    pipe = models.make_radiomics_pipeline(["zscore", "LR"], rng=0).fit(X, y)
    t = models.feature_contributions(pipe, X)
    assert list(t.columns) == models.CONTRIBUTION_COLUMNS and set(t["method"]) == {"linear"}
    total = t.attrs["per_row"].sum(axis=1) + t.attrs["intercept"]
    np.testing.assert_allclose(total, pipe.decision_function(X), rtol=0, atol=1e-10)
    assert set(t["feature"].iloc[:2]) == {"f0", "f2"}
    d = t.set_index("feature")["direction"]
    assert d["f0"] == 1 and d["f2"] == -1
    rad = models.RadscoreModel(lam=0.05, random_state=0).fit(X, y)
    tr = models.feature_contributions(rad, X)
    np.testing.assert_allclose(tr.attrs["per_row"].sum(axis=1) + tr.attrs["intercept"],
                               rad.decision_function(X), rtol=0, atol=1e-10)
    assert set(tr["feature"]) == set(rad.coef_.index)


@pytest.mark.parametrize("name", ["XGBoost", "LightGBM"])
def test_feature_contributions_tree_sum_to_margin(name):
    X, y = _contrib_data(1)
    pipe = models.make_radiomics_pipeline(["zscore", name], rng=0).fit(X, y)
    t = models.feature_contributions(pipe, X)
    assert set(t["method"]) == {"tree"} and t["feature"].iloc[0] in ("f0", "f2")
    margin = t.attrs["per_row"].sum(axis=1).to_numpy() + t.attrs["intercept"]
    p = pipe.predict_proba(X)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), p, rtol=0, atol=1e-5)
    assert t.set_index("feature").loc["f0", "direction"] == 1


def test_feature_contributions_permutation():
    X, y = _contrib_data(2)
    pipe = models.make_radiomics_pipeline(["zscore", "ExtraTrees"], rng=0).fit(X, y)
    with pytest.raises(ValueError, match="needs the labels"):
        models.feature_contributions(pipe, X)
    t = models.feature_contributions(pipe, X, y, n_repeats=5, rng=0)
    assert set(t["method"]) == {"permutation"} and t["feature"].iloc[0] in ("f0", "f2")
    assert t.attrs["per_row"].shape == (5, 5) and t["direction"].isna().all()
    with pytest.raises(ValueError, match="not an XGBoost"):
        models.feature_contributions(pipe, X, method="tree")
