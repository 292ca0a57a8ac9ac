"""vcfnb.reliability: vectorised ICC against R psych::ICC and pingouin, selection rules."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pingouin as pg
import pytest

from vcfnb.reliability import ICC_TYPES, feature_icc, icc_from_array, select_reliable

# Shrout & Fleiss (1979) table 2: 6 targets x 4 judges.
SF = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
               [6, 2, 4, 7]], float)
# R 4.x, psych:
# sf <- matrix(c(9,2,5,8,6,1,3,2,8,4,6,8,7,1,2,6,10,5,6,9,6,2,4,7), ncol=4, byrow=TRUE)
# psych::ICC(sf, lmer = FALSE)$results[, c("ICC", "lower bound", "upper bound")]
R_SF = {
    "ICC1": (0.165741768405476, -0.1329323248747509, 0.722560062328121),
    "ICC2": (0.289763779527559, 0.0187865133747120, 0.761084369648953),
    "ICC3": (0.714840714840715, 0.3424647650339254, 0.945858259955360),
    "ICC1k": (0.442797133679269, -0.8844421552381190, 0.912415420340776),
    "ICC2k": (0.620050547598989, 0.0711368153025035, 0.927232040167722),
    "ICC3k": (0.909315542377069, 0.6756747138163047, 0.985891678169062),
}
# Two readers, good agreement.
A = [4.1, 5.3, 2.2, 7.9, 6.4, 3.3, 5.8, 4.7, 6.9, 2.9]
B = [4.4, 5.0, 2.9, 7.1, 6.8, 3.9, 5.1, 5.2, 7.4, 2.5]
# R: psych::ICC(cbind(a, b), lmer = FALSE)   (a, b = A, B above)
R_AB = {
    "ICC1": (0.952353035228908, 0.831124246688328, 0.987761665286066),
    "ICC2": (0.952253791924802, 0.823548378393676, 0.987873807872452),
    "ICC3": (0.948303371981704, 0.806968029718326, 0.986904877366544),
    "ICC1k": (0.975595108102206, 0.907774825429191, 0.993843157895807),
    "ICC2k": (0.975543032226295, 0.903237213941230, 0.993899918556437),
    "ICC3k": (0.973465822231928, 0.893173555310901, 0.993409285576463),
}
# Two readers with a systematic offset (reader 2 ~ +1.7): consistency high, agreement low.
C1 = [10.2, 11.8, 9.7, 12.5, 10.9, 11.1, 9.9, 12.0]
C2 = [12.0, 13.1, 11.9, 14.2, 12.4, 13.0, 11.5, 13.9]
# R: psych::ICC(cbind(c1, c2), lmer = FALSE)
R_C = {
    "ICC1": (0.120413252582828, -0.5609387655793305, 0.723785744859600),
    "ICC2": (0.384398931433660, -0.0114637109698730, 0.833139687124009),
    "ICC3": (0.961596721019335, 0.8218451534498399, 0.992191599414389),
    "ICC1k": (0.214944356120826, -2.5551732724455873, 0.839763000730176),
    "ICC2k": (0.555329714153395, -0.0231933032648103, 0.908975669422238),
    "ICC3k": (0.980422439245969, 0.9022118613029176, 0.996080497183149),
}


@pytest.mark.parametrize("form", ICC_TYPES)
def test_icc_matches_r_psych(form):
    for x, ref in ((SF, R_SF), (np.column_stack([A, B]), R_AB), (np.column_stack([C1, C2]), R_C)):
        got = icc_from_array(x, form).iloc[0].to_numpy()
        np.testing.assert_allclose(got, ref[form], rtol=1e-9, atol=1e-12)


def test_feature_icc_vectorised_equals_r_per_column():
    a = pd.DataFrame({"good": A, "offset": C1 + [10.0, 11.0]}, index=[f"p{i}" for i in range(10)])
    b = pd.DataFrame({"good": B, "offset": C2 + [12.0, 13.0]}, index=a.index)
    # drop the last two cases of "offset" so it equals the R example: missing -> omitted
    a.loc[["p8", "p9"], "offset"] = np.nan
    t = feature_icc(a, b, icc="ICC2")
    assert list(t.columns[:4]) == ["feature", "icc", "ci_low", "ci_high"]
    np.testing.assert_allclose(t.loc[0, ["icc", "ci_low", "ci_high"]].astype(float), R_AB["ICC2"],
                               rtol=1e-9)
    np.testing.assert_allclose(t.loc[1, ["icc", "ci_low", "ci_high"]].astype(float), R_C["ICC2"],
                               rtol=1e-9)
    assert t["n"].tolist() == [10, 8]


PG_NAMES = {"ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)", "ICC1k": "ICC(1,k)",
            "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)"}


@pytest.mark.parametrize("form", ICC_TYPES)
def test_equals_pingouin(rng, form):
    n, v = 25, 6
    truth = rng.normal(size=(n, v)) * rng.uniform(0.5, 5, v)
    a = pd.DataFrame(truth + rng.normal(scale=0.5, size=(n, v)),
                     columns=[f"f{j}" for j in range(v)])
    b = pd.DataFrame(truth + 0.3 + rng.normal(scale=0.8, size=(n, v)), columns=a.columns)
    c = pd.DataFrame(truth + rng.normal(scale=0.4, size=(n, v)), columns=a.columns)
    got = feature_icc(a, b, c, icc=form).set_index("feature")
    for f in a.columns:
        long = pd.DataFrame({
            "case": np.tile(np.arange(n), 3), "reader": np.repeat(["a", "b", "c"], n),
            "value": np.concatenate([a[f], b[f], c[f]])})
        ref = pg.intraclass_corr(long, targets="case", raters="reader", ratings="value")
        # pingouin >= 0.6 names the forms after McGraw & Wong
        row = ref.set_index("Type").loc[PG_NAMES[form]]
        assert got.loc[f, "icc"] == pytest.approx(row["ICC"], rel=1e-9)
        # pingouin rounds its CI95 to 2 decimals
        np.testing.assert_allclose(got.loc[f, ["ci_low", "ci_high"]].astype(float),
                                   np.asarray(row["CI95"], float), atol=0.005 + 1e-12)


def test_constant_and_undefined_features_are_nan_and_never_selected(rng):
    n = 20
    base = rng.normal(size=n)
    a = pd.DataFrame({"ok": base + rng.normal(scale=0.05, size=n), "const": 3.0,
                      "mostly_nan": np.r_[base[:2], [np.nan] * (n - 2)]})
    b = pd.DataFrame({"ok": base + rng.normal(scale=0.05, size=n), "const": 3.0,
                      "mostly_nan": np.r_[base[:2], [np.nan] * (n - 2)]})
    t = feature_icc(a, b)
    assert t.loc[0, "icc"] > 0.95
    assert t.loc[[1, 2], ["icc", "ci_low", "ci_high"]].isna().all().all()
    assert select_reliable(t, 0.0) == ["ok"]
    assert select_reliable(t, 0.0, keep_undefined=True) == ["ok", "const", "mostly_nan"]


def test_select_reliable_rules():
    t = pd.DataFrame({"feature": list("abcd"), "icc": [0.95, 0.85, 0.80, np.nan],
                      "ci_low": [0.9, 0.7, 0.78, np.nan], "ci_high": [0.99, 0.9, 0.82, np.nan]})
    assert select_reliable(t, 0.85) == ["a"]
    assert select_reliable(t, 0.85, inclusive=True) == ["a", "b"]
    assert select_reliable(t, 0.75, on="ci_low") == ["a", "c"]
    with pytest.raises(ValueError, match="on must be"):
        select_reliable(t, on="icc_high")


def test_alignment_by_index_and_columns_and_errors(rng):
    a = pd.DataFrame(rng.normal(size=(6, 2)), index=list("uvwxyz"), columns=["f", "g"])
    b = a.iloc[::-1][["g", "f"]] * 1.0  # same values, other order
    t = feature_icc(a, b)
    assert t["icc"].tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="no case id"):
        feature_icc(a, b.set_axis(list("ABCDEF")))
    with pytest.raises(ValueError, match="duplicate"):
        feature_icc(a, pd.concat([a, a]))
    with pytest.raises(ValueError, match="unknown ICC"):
        feature_icc(a, b, icc="ICC4")
    assert feature_icc(a, b, icc="ICC(2,1)")["icc"].tolist() == pytest.approx([1.0, 1.0])


def test_fast_for_2000_features_by_100_cases(rng):
    n, v = 100, 2000
    truth = rng.normal(size=(n, v))
    a = pd.DataFrame(truth + rng.normal(scale=0.3, size=(n, v)))
    b = pd.DataFrame(truth + rng.normal(scale=0.3, size=(n, v)))
    a.columns = b.columns = [f"f{j}" for j in range(v)]
    t0 = time.perf_counter()
    t = feature_icc(a, b)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"feature_icc took {elapsed:.1f} s for 2000 x 100"
    assert len(t) == v and t["icc"].between(0.8, 1.0).all()
