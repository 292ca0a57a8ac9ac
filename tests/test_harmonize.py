"""vcfnb.harmonize.ComBat against R sva::ComBat, and its fit-on-train semantics.

The reference values were computed once with R 4.2.2 and Bioconductor sva 3.46.0 (Debian
bookworm ``r-bioc-sva``) by ``tests/r_reference/combat.R`` on ``combat_input.csv`` (written by
``tests/r_reference/combat_input.py``); CI has no R and reads the committed
``combat_reference.csv``. Each case is one call (``dat`` = features x samples, ``batch`` = the
``batch`` column, ``mod = model.matrix(~ age + sex)`` or NULL)::

    par_ref             ComBat(dat, batch, mod, par.prior = TRUE,  ref.batch = "A")  # A, B, C
    nonpar_ref          ComBat(dat, batch, mod, par.prior = FALSE, ref.batch = "A")  # A, B, C
    par_noref           ComBat(dat, batch, mod, par.prior = TRUE)                    # A, B, C
    nonpar_noref        ComBat(dat, batch, mod, par.prior = FALSE)                   # A, B, C
    meanonly_ref        ComBat(dat, batch, mod, par.prior = TRUE, mean.only = TRUE,
                               ref.batch = "A")                                      # A, B, C
    par_ref_external    ComBat(dat, batch, NULL, par.prior = TRUE,  ref.batch = "A") # A-D
    nonpar_ref_external ComBat(dat, batch, NULL, par.prior = FALSE, ref.batch = "A") # A-D
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vcfnb.harmonize import ComBat


# ---- the study's earlier harmonise (vcfnb/studies/osteoporosis.py at 09f5891; docstring cut) ----
def _eb_batch(z: np.ndarray, tol: float = 1e-4, max_iter: int = 200
              ) -> tuple[np.ndarray, np.ndarray]:
    """Parametric empirical-Bayes location/scale of one batch (ComBat, Johnson 2007)."""
    n = z.shape[0]
    g_hat = np.nanmean(z, axis=0)
    d_hat = np.nanvar(z, axis=0, ddof=1)
    g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
    m, s2 = d_hat.mean(), d_hat.var(ddof=1)
    a = (2 * s2 + m ** 2) / s2
    b = (m * s2 + m ** 3) / s2
    g_new, d_new = g_hat.copy(), d_hat.copy()
    for _ in range(max_iter):
        g_prev, d_prev = g_new, d_new
        g_new = (n * t2 * g_hat + d_prev * g_bar) / (n * t2 + d_prev)
        ssr = np.nansum((z - g_new) ** 2, axis=0)
        d_new = (b + 0.5 * ssr) / (n / 2.0 + a - 1.0)
        change = max(np.max(np.abs(g_new - g_prev) / (np.abs(g_prev) + 1e-12)),
                     np.max(np.abs(d_new - d_prev) / (d_prev + 1e-12)))
        if change < tol:
            break
    return g_new, d_new


def harmonise(features: pd.DataFrame, batch: pd.Series, *, reference: pd.Series,
              method: str = "combat", empirical_bayes: bool = True) -> pd.DataFrame:
    if method == "none":
        return features.copy()
    if method != "combat":
        raise ValueError(f"method must be 'none' or 'combat', got {method!r}")
    batch = pd.Series(batch, index=features.index).astype(str)
    reference = pd.Series(reference, index=features.index).astype(bool)
    if not reference.any():
        raise ValueError("no reference rows to harmonise onto")
    ref_batches = batch[reference].unique()
    if len(ref_batches) != 1:
        raise ValueError(f"reference rows span several batches: {list(ref_batches)}")
    X = features.to_numpy(float)
    ref = X[reference.to_numpy()]
    m_ref = np.nanmean(ref, axis=0)
    s_ref = np.nanstd(ref, axis=0, ddof=1)
    s_ref = np.where(s_ref > 0, s_ref, 1.0)
    out = X.copy()
    for b in batch.unique():
        if b == ref_batches[0]:
            continue
        rows = (batch == b).to_numpy()
        if rows.sum() < 3:
            raise ValueError(f"batch {b!r} has {rows.sum()} rows: too few to estimate its scale")
        z = (X[rows] - m_ref) / s_ref
        if empirical_bayes:
            g, d = _eb_batch(z)
        else:
            g, d = np.nanmean(z, axis=0), np.nanvar(z, axis=0, ddof=1)
        d = np.where(d > 0, d, 1.0)
        out[rows] = m_ref + s_ref * (z - g) / np.sqrt(d)
    return pd.DataFrame(out, index=features.index, columns=features.columns)


REF = Path(__file__).parent / "r_reference"
F = [f"f{i}" for i in range(1, 9)]
COV = ["age", "sex"]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(REF / "combat_input.csv").set_index("sample")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_csv(REF / "combat_reference.csv")


def _sva(reference: pd.DataFrame, case: str) -> pd.DataFrame:
    r = reference[reference["case"] == case].set_index("sample")[F]
    assert len(r), case
    return r


def _close(H: pd.DataFrame, R: pd.DataFrame, rtol: float = 1e-6) -> None:
    h = H.loc[R.index, F].to_numpy()
    r = R.to_numpy()
    scale = np.abs(r).max(axis=0)  # features live on very different scales
    np.testing.assert_array_less(np.abs(h - r) / scale, rtol)


@pytest.mark.parametrize("case, kwargs", [
    ("par_ref", {"ref_batch": "A"}),
    ("nonpar_ref", {"ref_batch": "A", "parametric": False}),
    ("par_noref", {}),
    ("nonpar_noref", {"parametric": False}),
    ("meanonly_ref", {"ref_batch": "A", "mean_only": True}),
])
def test_equals_sva_with_covariates(data, reference, case, kwargs):
    train = data[data["batch"] != "D"]
    H = ComBat(batch_col="batch", covariates=COV, **kwargs).fit_transform(train)
    _close(H, _sva(reference, case))


@pytest.mark.parametrize("case, parametric", [("par_ref_external", True),
                                              ("nonpar_ref_external", False)])
@pytest.mark.parametrize("fit_batches", [("A",), ("A", "B", "C")])
def test_new_batch_equals_sva_joint_run(data, reference, case, parametric, fit_batches):
    """Fitted on training batches only, the external batch D is estimated from its own rows
    at transform time: equal to sva run on all four batches together (no covariates)."""
    fit_rows = data[data["batch"].isin(fit_batches)][["batch", *F]]
    cb = ComBat(batch_col="batch", ref_batch="A", parametric=parametric).fit(fit_rows)
    H = cb.transform(data[["batch", *F]])
    _close(H, _sva(reference, case))
    assert "D" not in cb.batches_


def test_reference_batch_unchanged(data):
    train = data[data["batch"] != "D"]
    for parametric in (True, False):
        cb = ComBat(batch_col="batch", ref_batch="A", covariates=COV, parametric=parametric)
        H = cb.fit_transform(train)
        a = train["batch"] == "A"
        pd.testing.assert_frame_equal(H[a], train.loc[a, F])
        assert not np.allclose(H[~a].to_numpy(), train.loc[~a, F].to_numpy())
        assert (cb.gamma_star_.loc["A"] == 0).all() and (cb.delta_star_.loc["A"] == 1).all()


def test_transform_does_not_refit(data):
    """Rows of a fitted batch that were not in fit (a test split) use the stored parameters;
    transforming other rows changes no fitted attribute."""
    d = data[data["batch"] != "D"]
    rng = np.random.default_rng(0)
    is_train = pd.Series(rng.random(len(d)) < 0.6, index=d.index)
    assert is_train.groupby(d["batch"]).sum().min() >= 3
    cb = ComBat(batch_col="batch", ref_batch="A", covariates=COV).fit(d[is_train])
    before = {k: getattr(cb, k).copy() for k in ("gamma_star_", "delta_star_", "grand_mean_",
                                                 "var_pooled_", "beta_")}
    full = cb.transform(d)
    test_only = cb.transform(d[~is_train])
    pd.testing.assert_frame_equal(full[~is_train], test_only)  # row-wise, no refit
    for k, v in before.items():
        pd.testing.assert_frame_equal(pd.DataFrame(getattr(cb, k)), pd.DataFrame(v))
    # the test rows of batch B follow the closed form with B's fitted parameters
    b = d[~is_train & (d["batch"] == "B")]
    cov = b[COV].to_numpy(float)
    stand = cb.grand_mean_.to_numpy() + cov @ cb.beta_.to_numpy()
    sd = np.sqrt(cb.var_pooled_.to_numpy())
    z = (b[F].to_numpy() - stand) / sd
    expect = (z - cb.gamma_star_.loc["B"].to_numpy()) / np.sqrt(cb.delta_star_.loc["B"].to_numpy())
    np.testing.assert_allclose(test_only.loc[b.index].to_numpy(), expect * sd + stand,
                               rtol=1e-12)
    # a refit on all rows would give other parameters: fit really used the training rows only
    other = ComBat(batch_col="batch", ref_batch="A", covariates=COV).fit(d)
    assert not np.allclose(other.gamma_star_.loc["B"], cb.gamma_star_.loc["B"])


def test_new_batch_is_transductive_and_can_be_forbidden(data):
    d = data[["batch", *F]]
    cb = ComBat(batch_col="batch", ref_batch="A").fit(d[d["batch"] == "A"])
    ext = d[d["batch"] == "D"]
    whole = cb.transform(ext)
    half = cb.transform(ext.iloc[:5])
    # a new batch's location/scale come from its own rows: a subset gives other values
    assert not np.allclose(whole.iloc[:5].to_numpy(), half.to_numpy())
    eff = cb.batch_effects(ext)
    assert set(eff["batch"]) == {"A", "D"} and not eff.loc[eff.batch == "D", "fitted"].any()
    strict = ComBat(batch_col="batch", ref_batch="A", new_batches="error")
    with pytest.raises(ValueError, match="not seen in fit"):
        strict.fit(d[d["batch"] == "A"]).transform(ext)


def test_ddof_option(data):
    """ddof=1 pools the reference variance as a sample variance: var_pooled scales by
    n/(n-1) and the reference batch still does not move."""
    d = data[data["batch"] != "D"][["batch", *F]]
    a = ComBat(batch_col="batch", ref_batch="A").fit(d)
    b = ComBat(batch_col="batch", ref_batch="A", ddof=1).fit(d)
    n = int((d["batch"] == "A").sum())
    np.testing.assert_allclose(b.var_pooled_, a.var_pooled_ * n / (n - 1), rtol=1e-12)
    Hb = b.transform(d)
    pd.testing.assert_frame_equal(Hb[d.batch == "A"], d.loc[d.batch == "A", F])


def test_equals_previous_study_harmonise():
    """The study's earlier ``harmonise`` (reference = training rows, sample SD; copied above)
    is ``ComBat(ref_batch=<training centre>, ddof=1)`` fitted on the training rows."""
    g = np.random.default_rng(1)
    X = pd.DataFrame(g.normal(size=(90, 30)) * np.arange(1, 31),
                     columns=[f"x{i}" for i in range(30)])
    X.iloc[60:] = X.iloc[60:] * g.uniform(0.5, 2, 30) + g.normal(0, 3, 30)
    site = pd.Series(["A"] * 60 + ["B"] * 30)
    train = pd.Series(np.arange(90) < 40)
    for eb in (False, True):
        old = harmonise(X, site, reference=train, empirical_bayes=eb)
        cb = ComBat(batch_col="site", ref_batch="A", ddof=1, empirical_bayes=eb)
        new = cb.fit(X[train].assign(site="A")).transform(X.assign(site=site))
        np.testing.assert_allclose(new.to_numpy(), old.to_numpy(), rtol=1e-8, atol=1e-8)


def test_constant_feature_and_categorical_covariate():
    g = np.random.default_rng(3)
    X = pd.DataFrame(g.normal(size=(40, 5)), columns=list("abcde"))
    X["site"] = ["s1"] * 20 + ["s2"] * 20
    X["sex"] = g.choice(["F", "M"], 40)
    X.loc[X.site == "s2", list("abcd")] += 2.0
    X.loc[X.site == "s1", "e"] = 1.5  # constant within s1: sva leaves it unadjusted
    cb = ComBat(batch_col="site", ref_batch="s1", covariates=["sex"]).fit(X)
    assert list(cb.adjusted_) == [True, True, True, True, False]
    assert cb.covariate_columns_ == ["sex[M]"]
    H = cb.transform(X)
    pd.testing.assert_series_equal(H["e"], X["e"])
    assert abs(H.loc[X.site == "s2", "a"].mean() - X.loc[X.site == "s1", "a"].mean()) < 0.5
    with pytest.raises(ValueError, match="not seen in fit"):
        cb.transform(X.assign(sex="U"))


def test_input_errors():
    X = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [2.0, 1, 4, 3], "site": list("AABB")})
    with pytest.raises(ValueError, match="reference batch"):
        ComBat(batch_col="site", ref_batch="C").fit(X)
    with pytest.raises(ValueError, match="missing or infinite"):
        ComBat(batch_col="site").fit(X.assign(a=[1.0, np.nan, 3, 4]))
    with pytest.raises(TypeError, match="DataFrame"):
        ComBat(batch_col="site").fit(X.to_numpy())
