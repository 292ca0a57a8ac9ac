"""Study glue of seed 002: DXA rule, per-patient features, harmonisation, radscore model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from vcfnb.studies import osteoporosis as study


def test_dxa_rule_grades():
    cases = pd.DataFrame({
        "patient_id": list("abcdefg"),
        "age": [70, 65, 55, 40, 45, 50, 49.9],
        "t_score": [-2.5, -1.2, -1.0, -3.0, 0.5, -0.99, -1.5],
        "z_score": [-1.0, 0.0, 0.3, -1.9, -2.1, 0.0, -2.0],
        "outcome": [1, 1, 0, 0, 1, 0, 0],
    })
    r = study.dxa_rule(cases)
    assert r.reference.tolist() == ["T", "T", "T", "Z", "Z", "T", "Z"]
    assert r.dxa_class.tolist() == ["osteoporosis", "low bone mass", "normal", "normal",
                                    "abnormal (Z)", "normal", "normal"]
    assert r.abnormal.tolist() == [1, 1, 0, 0, 1, 0, 0]
    assert r.agrees.all()
    # a young patient with a low T-score but Z >= -2 is normal: the Z-score decides
    assert r.loc[3, "abnormal"] == 0


def test_dxa_rule_without_dxa_columns():
    r = study.dxa_rule(pd.DataFrame({"patient_id": ["x", "y"]}))
    assert (r.dxa_class == "unknown").all() and r.abnormal.isna().all()
    cases = study.label_cases(pd.DataFrame({"patient_id": ["x", "y"]}), r)
    assert len(cases) == 2 and cases.outcome.isna().all()


def _features(rng, n=6):
    rows = []
    for p in range(n):
        for seq in ("T1", "T2"):
            for reader in ("1", "2"):
                for lev in study.LEVELS:
                    rows.append({"patient_id": f"P{p}", "roi": lev, "sequence": seq,
                                 "reader": reader, "f_a": p * 10 + rng.normal(0, 0.1),
                                 "f_b": rng.normal()})
    return pd.DataFrame(rows)


def test_reader_icc_and_patient_features(rng):
    f = _features(rng)
    icc = study.reader_icc(f, threshold=0.75)
    assert set(icc.sequence) == {"T1", "T2"}
    kept = icc.set_index(["sequence", "feature"])["kept"]
    assert kept[("T1", "f_a")] and not kept[("T1", "f_b")]
    X = study.patient_features(f, keep=icc)
    assert list(X.columns) == ["T1WI_f_a", "T2WI_f_a"] and len(X) == 6
    r1 = f[(f.reader == "1") & (f.sequence == "T1") & (f.patient_id == "P2")]
    assert X.loc["P2", "T1WI_f_a"] == pytest.approx(r1.f_a.mean())
    per = study.patient_features(f, keep=icc, how="per-level")
    assert "T1WI_L3_f_a" in per.columns and per.shape[1] == 8


def test_harmonise_maps_external_onto_training(rng):
    n_tr, n_te, n_ex = 60, 20, 30
    X = pd.DataFrame(rng.normal(size=(n_tr + n_te + n_ex, 20)),
                     columns=[f"f{i}" for i in range(20)])
    ext = np.r_[np.zeros(n_tr + n_te, bool), np.ones(n_ex, bool)]
    X.loc[ext] = X.loc[ext] * rng.uniform(1.5, 3, 20) + rng.uniform(-4, 4, 20)
    batch = pd.Series(np.where(ext, "B", "A"))
    train = pd.Series(np.r_[np.ones(n_tr, bool), np.zeros(n_te + n_ex, bool)])
    for eb in (True, False):
        H = study.harmonise(X, batch, reference=train, empirical_bayes=eb)
        pd.testing.assert_frame_equal(H.loc[~ext], X.loc[~ext])  # internal rows untouched
        smd = (H.loc[ext].mean() - X.loc[:n_tr - 1].mean()).abs() / X.loc[:n_tr - 1].std()
        assert smd.max() < 0.5
        ratio = H.loc[ext].std() / X.loc[:n_tr - 1].std()
        assert ratio.between(0.6, 1.6).all()
    assert study.harmonise(X, batch, reference=train, method="none").equals(X)
    with pytest.raises(ValueError):
        study.harmonise(X, batch, reference=train, method="magic")


def test_radscore_model(rng):
    n = 120
    X = pd.DataFrame(rng.normal(size=(n, 30)), columns=[f"T1WI_f{i}" for i in range(30)])
    y = (X.T1WI_f0 - X.T1WI_f1 + rng.normal(size=n) > 0).astype(int)
    m = study.RadscoreModel(cv=5, random_state=0).fit(X, y)
    assert {"T1WI_f0", "T1WI_f1"} <= set(m.coef_.index)
    assert m.coef_["T1WI_f0"] > 0 > m.coef_["T1WI_f1"]
    z = (X - X.mean()) / X.std(ddof=0)
    expected = m.intercept_ + z[m.coef_.index] @ m.coef_
    np.testing.assert_allclose(m.radscore(X), expected, rtol=1e-9)
    p = m.predict_proba(X)[:, 1]
    assert np.all(np.diff(p[np.argsort(m.radscore(X))]) >= -1e-12)  # monotone link
    assert m.formula().startswith("Radscore = ")
    fixed = study.RadscoreModel(lam=0.13).fit(X, y)
    assert fixed.lasso_.lambda_ == pytest.approx(0.13) and len(fixed.coef_) >= 1
    clone(m)  # sklearn-cloneable


def test_model_groups():
    g = study.model_groups(["T1WI_a", "T2WI_b", "T1WI_c"])
    assert g == {"T1WI": ["T1WI_a", "T1WI_c"], "T2WI": ["T2WI_b"],
                 "T1WI+T2WI": ["T1WI_a", "T1WI_c", "T2WI_b"]}


def test_perturbed_reader(rng):
    m = np.zeros((3, 40, 40), bool)
    m[:, 10:30, 8:32] = True
    r = study.perturbed_reader(m, 1)
    assert r.shape == m.shape and r[1].any()
    dice = 2 * (r & m).sum() / (r.sum() + m.sum())
    assert 0.8 < dice < 1.0
    assert np.array_equal(r, study.perturbed_reader(m, 1))  # seeded


def test_permutation_test_noise_and_jobs(rng):
    n = 60
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"T1WI_f{i}" for i in range(8)],
                     index=[f"P{i}" for i in range(n)])
    cases = pd.DataFrame({"patient_id": X.index, "outcome": rng.integers(0, 2, n),
                          "split": ["train"] * 40 + ["test"] * 20})
    model = study.RadscoreModel(lam=0.05)
    a = study.permutation_test(X, cases, model=model, n_permutations=6, rng=3)
    b = study.permutation_test(X, cases, model=model, n_permutations=6, rng=3, n_jobs=2)
    pd.testing.assert_frame_equal(a.null, b.null)
    assert len(a.null) == 6 and 1 / 7 <= a.p_value <= 1
    assert a.observed == b.observed
