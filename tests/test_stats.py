"""Tests of vcfnb.stats against reference values computed in R.

The data sets are the small CSV files in tests/r_reference/ and every reference value below was
printed by tests/r_reference/reference.R (R 4, pROC 1.18.0, rms 6.5.0, MatchIt 4.5.1; output in
reference_output.txt). The exact R call is repeated in a comment next to each value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vcfnb import stats as st

REF = Path(__file__).parent / "r_reference"
TOL = 1e-6


@pytest.fixture(scope="module")
def roc():
    return pd.read_csv(REF / "roc.csv")


@pytest.fixture(scope="module")
def calib():
    return pd.read_csv(REF / "calib.csv")


@pytest.fixture(scope="module")
def base():
    return pd.read_csv(REF / "baseline.csv")


@pytest.fixture(scope="module")
def psm():
    return pd.read_csv(REF / "psm.csv")


# ---------------------------------------------------------------------------------------------
# ROC AUC, DeLong
# ---------------------------------------------------------------------------------------------
# R: r <- roc(d$y, d$sX, direction = "<", levels = c(0, 1)); c(auc(r), ci.auc(r, method = "delong")[c(1, 3)])
#    var(r, method = "delong")
@pytest.mark.parametrize(
    "col, auc, lo, hi, var",
    [
        ("s1", 0.788461538461538, 0.673316461284637, 0.903606615638440, 0.00345139422727924),
        ("s2", 0.850678733031674, 0.753077800058196, 0.948279666005152, 0.00247977202462164),
        (
            "s3",
            0.566176470588235,
            0.425301943776358,
            0.707050997400113,
            0.00516617077802864,
        ),  # many ties
    ],
)
def test_roc_auc_ci_delong_matches_proc(roc, col, auc, lo, hi, var):
    r = st.roc_auc_ci(roc.y, roc[col])
    assert r.auc == pytest.approx(auc, abs=TOL)
    assert r.ci_low == pytest.approx(lo, abs=TOL)
    assert r.ci_high == pytest.approx(hi, abs=TOL)
    assert r.se**2 == pytest.approx(var, abs=1e-10)
    assert (r.n, r.n_pos, r.n_neg) == (60, 26, 34)


def test_roc_auc_ci_conf_level_and_p(roc):
    # R: ci.auc(r1, method = "delong", conf.level = 0.9)[c(1, 3)]
    r = st.roc_auc_ci(roc.y, roc.s1, alpha=0.1)
    assert [r.ci_low, r.ci_high] == pytest.approx([0.691828743515319, 0.885094333407758], abs=TOL)
    # p vs 0.5: z = (auc - 0.5) / sqrt(var) with the pROC DeLong variance above
    z = (0.788461538461538 - 0.5) / np.sqrt(0.00345139422727924)
    from scipy.stats import norm

    assert r.p_value == pytest.approx(2 * norm.sf(z), rel=1e-6)


def test_roc_auc_ci_bootstrap_reproducible_and_close_to_delong(roc):
    a = st.roc_auc_ci(roc.y, roc.s1, method="bootstrap", n_boot=500, rng=1)
    b = st.roc_auc_ci(roc.y, roc.s1, method="bootstrap", n_boot=500, rng=1)
    c = st.roc_auc_ci(roc.y, roc.s1, method="bootstrap", n_boot=500, rng=2)
    assert a.ci_low == b.ci_low and a.ci_high == b.ci_high
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.auc < a.ci_high
    assert abs(a.ci_low - 0.673316461284637) < 0.04 and abs(a.ci_high - 0.903606615638440) < 0.04


def test_roc_auc_ci_errors(roc):
    with pytest.raises(ValueError, match="0/1"):
        st.roc_auc_ci([0, 1, 2, 1], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="method"):
        st.roc_auc_ci(roc.y, roc.s1, method="wald")
    with pytest.raises(ValueError, match="at least 2"):
        st.roc_auc_ci([0, 0, 0, 1], [1, 2, 3, 4])


# R: roc.test(rA, rB, method = "delong", paired = TRUE); c(statistic, p.value)
@pytest.mark.parametrize(
    "a, b, z, p",
    [
        ("s1", "s2", -1.315747030121200, 0.188258963338727),
        ("s1", "s3", 2.3094211677643206, 0.0209202215228327),
        ("s2", "s3", 2.94427119527429326, 0.00323716204952026),
    ],
)
def test_delong_paired_matches_proc(roc, a, b, z, p):
    r = st.delong_test(roc.y, roc[a], roc[b])
    assert r.z == pytest.approx(z, abs=TOL)
    assert r.p_value == pytest.approx(p, abs=TOL)
    assert r.auc_a == pytest.approx(st.roc_auc_ci(roc.y, roc[a]).auc)


def test_delong_unpaired_matches_proc(roc):
    d2 = pd.read_csv(REF / "roc2.csv")
    # R: rb <- roc(d2$y, d2$s, direction = "<"); roc.test(r1, rb, method = "delong", paired = FALSE)
    #    c(auc(rb), statistic D, parameter df, p.value)
    r = st.delong_test_unpaired(roc.y, roc.s1, d2.y, d2.s)
    assert r.auc_b == pytest.approx(0.6067193675889329, abs=TOL)
    assert r.z == pytest.approx(1.7421783437022429, abs=TOL)
    assert r.df == pytest.approx(81.2867500536798246, abs=1e-6)
    assert r.p_value == pytest.approx(0.0852595737983016, abs=TOL)


def test_delong_matrix(roc):
    m = st.delong_matrix(roc.y, {"s1": roc.s1, "s2": roc.s2, "s3": roc.s3})
    assert list(m.index) == list(m.columns) == ["s1", "s2", "s3"]
    assert np.isnan(np.diag(m.to_numpy())).all()
    assert m.loc["s1", "s3"] == pytest.approx(0.0209202215228327, abs=TOL)
    assert m.loc["s3", "s2"] == pytest.approx(0.00323716204952026, abs=TOL)


# ---------------------------------------------------------------------------------------------
# cutoffs and metrics
# ---------------------------------------------------------------------------------------------
def test_youden_cutoff_and_metrics_match_proc(roc):
    # R: coords(r1, "best", best.method = "youden", transpose = FALSE) -> threshold, specificity, sensitivity
    c = st.youden_cutoff(roc.y, roc.s1)
    assert c == pytest.approx(0.16995, abs=TOL)
    bm = st.binary_metrics(roc.y, roc.s1, c)
    assert bm.loc["specificity", "estimate"] == pytest.approx(0.705882352941177, abs=TOL)
    assert bm.loc["sensitivity", "estimate"] == pytest.approx(0.846153846153846, abs=TOL)
    assert bm.loc["sensitivity", "count"] == "22/26"
    assert list(bm.index) == ["accuracy", "sensitivity", "specificity", "ppv", "npv"]


def test_binary_metrics_cis():
    y = np.ones(26, int)
    s = np.r_[np.ones(19), np.zeros(7)]
    # R: prop.test(19, 26, correct = FALSE)$conf.int
    w = st.binary_metrics(y, s, 0.5).loc["sensitivity"]
    assert (w.ci_low, w.ci_high) == pytest.approx((0.539169596208238, 0.862955516779816), abs=TOL)
    # R: binom.test(19, 26)$conf.int
    e = st.binary_metrics(y, s, 0.5, ci="exact").loc["sensitivity"]
    assert (e.ci_low, e.ci_high) == pytest.approx((0.522125210306169, 0.884267786708496), abs=TOL)
    assert np.isnan(st.binary_metrics(y, s, 0.5).loc["specificity", "estimate"])


def test_model_report_uses_training_cutoff(roc):
    tr, te = roc.iloc[::2], roc.iloc[1::2]
    rep = st.model_report(tr.y, tr.s1, te.y, te.s1, model="m1")
    assert list(rep.split) == ["train", "test"]
    assert rep.cutoff.nunique() == 1
    assert rep.cutoff.iloc[0] == pytest.approx(st.youden_cutoff(tr.y, tr.s1))
    test_row = rep.iloc[1]
    bm = st.binary_metrics(te.y, te.s1, rep.cutoff.iloc[0])
    assert test_row.sensitivity == bm.loc["sensitivity", "estimate"]
    assert test_row.sensitivity_count == bm.loc["sensitivity", "count"]
    assert test_row.auc == pytest.approx(st.roc_auc_ci(te.y, te.s1).auc)
    assert "(" in test_row.auc_95ci


# ---------------------------------------------------------------------------------------------
# calibration, HL, decision curves
# ---------------------------------------------------------------------------------------------
def test_calibration_slope_intercept_matches_glm(calib):
    r = st.calibration_slope_intercept(calib.y, calib.p)
    # R: glm(y ~ qlogis(p), binomial, control = glm.control(epsilon = 1e-14)) -> coef; confint.default
    assert r.slope == pytest.approx(1.0825639181639761, abs=TOL)
    assert r.intercept_slope_model == pytest.approx(-0.0571702069196559, abs=TOL)
    assert (r.slope_ci_low, r.slope_ci_high) == pytest.approx(
        (0.691272982768824, 1.473854853559128), abs=TOL
    )
    # R: glm(y ~ offset(qlogis(p)), binomial) -> intercept
    assert r.intercept == pytest.approx(-0.0747788150643443, abs=TOL)
    # R: rms::val.prob(p, y, pl = FALSE)[c("Intercept", "Slope")] (lrm, looser convergence)
    assert r.slope == pytest.approx(1.082563916011294, abs=1e-6)


# R: explicit hoslem.test-style implementation in reference.R: hl(y, p, g)
@pytest.mark.parametrize(
    "g, rounded, stat, dof, p",
    [
        (10, False, 3.35204444228168, 8, 0.91036430101003),
        (8, False, 5.822121282972513, 6, 0.443408468315819),
        (10, True, 3.75859471990297, 5, 0.58466885189484),  # ties merge quantile groups
    ],
)
def test_hosmer_lemeshow_matches_r(calib, g, rounded, stat, dof, p):
    prob = calib.p.round(1) if rounded else calib.p
    r = st.hosmer_lemeshow(calib.y, prob, groups=g)
    assert r.statistic == pytest.approx(stat, abs=TOL)
    assert r.dof == dof
    assert r.p_value == pytest.approx(p, abs=TOL)


def test_calibration_curve(calib):
    cc = st.calibration_curve(calib.y, calib.p, n_bins=10)
    assert len(cc) == 10 and cc.n.sum() == 200
    assert cc.events.sum() == calib.y.sum()
    assert (cc.mean_predicted.diff().dropna() > 0).all()
    assert ((cc.ci_low <= cc.observed) & (cc.observed <= cc.ci_high)).all()
    cu = st.calibration_curve(calib.y, calib.p, n_bins=5, strategy="uniform")
    assert cu.n.sum() == 200 and len(cu) <= 5


def test_net_benefit_and_decision_curve(calib):
    t = [0.1, 0.2, 0.4, 0.6]
    nb = st.net_benefit(calib.y, calib.p, t)
    # R: tp/n - fp/n * t/(1-t) with pr >= t (reference.R nb())
    assert nb.net_benefit.to_numpy() == pytest.approx(
        [0.351666666666667, 0.27875, 0.143333333333333, 0.0775], abs=TOL
    )
    dc = st.decision_curve(calib.y, {"model": calib.p}, t)
    assert list(dc.columns) == ["model", "threshold", "net_benefit"]
    prev = calib.y.mean()
    ta = dc[dc.model == "Treat all"].net_benefit.to_numpy()
    assert ta == pytest.approx(prev - (1 - prev) * np.array(t) / (1 - np.array(t)))
    assert (dc[dc.model == "Treat none"].net_benefit == 0).all()
    # treat-all equals a model that calls everybody positive
    assert ta == pytest.approx(
        st.net_benefit(calib.y, np.ones(len(calib)), t).net_benefit.to_numpy()
    )
    with pytest.raises(ValueError):
        st.net_benefit(calib.y, calib.p, [1.0])


# ---------------------------------------------------------------------------------------------
# baseline and logistic tables
# ---------------------------------------------------------------------------------------------
def test_baseline_table_matches_r(base):
    tb = st.baseline_table(base, "group", ["age", "bmi", "vbmd", "sex", "site"]).set_index(
        ["variable", "level"]
    )
    # R: shapiro.test per group: age 0.23/0.78 (normal) -> t.test(age ~ group, var.equal = TRUE)
    age = tb.loc[("age", "")]
    assert age.test == "t-test" and age.summary == "mean ± SD"
    assert age.statistic == pytest.approx(-3.00481708539988857, abs=TOL)
    assert age.p_value == pytest.approx(0.00324628756616904, abs=TOL)
    # R: shapiro bmi group 1 p = 0.0011 -> wilcox.test(bmi ~ group, exact = FALSE, correct = TRUE)
    bmi = tb.loc[("bmi", "")]
    assert bmi.test == "Mann-Whitney U" and bmi.summary == "median [IQR]"
    assert bmi.statistic == pytest.approx(2206.5, abs=TOL)
    assert bmi.p_value == pytest.approx(0.0152026543505337, abs=TOL)
    # R: quantile(bmi[group == 0], c(.25, .5, .75)) = 20.800, 24.950, 29.725
    assert bmi["0"] == "24.9 [20.8, 29.7]"  # 24.95 is 24.9499... in binary
    vbmd = tb.loc[("vbmd", "")]
    assert vbmd.p_value == pytest.approx(0.0150627450256548, abs=TOL)
    # R: chisq.test(table(sex, group)) (Yates) -> p = 1
    assert tb.loc[("sex", "F")].test == "chi-square"
    assert tb.loc[("sex", "F")].p_value == pytest.approx(0.999999999999999, abs=TOL)
    n0 = (base.group == 0).sum()
    nf0 = ((base.group == 0) & (base.sex == "F")).sum()
    assert tb.loc[("sex", "F")]["0"] == f"{nf0} ({100 * nf0 / n0:.1f}%)"
    assert tb.loc[("site", "lumbar")].test == "chi-square"  # min expected 6.67


def test_baseline_table_fisher_rx2(base):
    # R: t <- table(site[1:40], group[1:40]); min expected 1.3; fisher.test(t)$p.value
    tb = st.baseline_table(base.iloc[:40], "group", ["site"])
    assert (tb.test == "Fisher exact").all()
    assert tb.p_value.iloc[0] == pytest.approx(0.0927442786632724, abs=TOL)
    # R: fisher.test(matrix(c(3, 0, 1, 5, 2, 4), 2))$p.value = 0.08391608
    from vcfnb.stats import _fisher_exact

    assert _fisher_exact(np.array([[3, 1, 2], [0, 5, 4]])) == pytest.approx(
        0.0839160839160839, abs=TOL
    )


def test_baseline_table_does_not_mutate(base):
    before = base.copy()
    st.baseline_table(base, "group", ["age", "sex"])
    pd.testing.assert_frame_equal(base, before)


def test_logistic_table_matches_glm(base):
    # R: fm <- glm(group ~ age + bmi + sex, binomial, data = bd (sex factor, ref "F"), epsilon = 1e-14)
    #    exp(coef(fm))[-1]; exp(confint.default(fm))[-1, ]; summary(fm)$coefficients[-1, 4]
    t = st.logistic_table(base, "group", ["age", "bmi", "sex"]).set_index("term")
    assert list(t.index) == ["age", "bmi", "sex[M]"]
    assert t["or"].to_numpy() == pytest.approx(
        [1.053327920559677, 0.947832243223529, 0.890049078475599], abs=TOL
    )
    assert t.ci_low.to_numpy() == pytest.approx(
        [1.012938855455192, 0.891286178616341, 0.411100391664352], abs=TOL
    )
    assert t.ci_high.to_numpy() == pytest.approx(
        [1.09532742500236, 1.00796577221564, 1.92699247716128], abs=TOL
    )
    assert t.p_value.to_numpy() == pytest.approx(
        [0.00920325570895976, 0.08779322985389139, 0.76757414690125014], abs=TOL
    )
    # R: fu <- glm(group ~ age, binomial); exp(coef), exp(confint.default), p
    u = st.logistic_table(base, "group", ["age", "bmi", "sex"], multivariable=False).set_index(
        "term"
    )
    assert [u.loc["age", c] for c in ("or", "ci_low", "ci_high", "p_value")] == pytest.approx(
        [1.05648844338874670, 1.01675050162009328, 1.09777947415366106, 0.00496659546527045],
        abs=TOL,
    )


def test_univariate_multivariate(base):
    t = st.univariate_multivariate(base, "group", ["age", "bmi", "sex"]).set_index("term")
    # entered: univariate p < 0.05 (age, bmi); sex not entered
    assert np.isnan(t.loc["sex[M]", "or_multi"]) and t.loc["sex[M]", "or_95ci_multi"] == ""
    two = st.logistic_table(base, "group", ["age", "bmi"]).set_index("term")
    assert t.loc["age", "or_multi"] == pytest.approx(two.loc["age", "or"])
    allin = st.univariate_multivariate(
        base, "group", ["age", "bmi", "sex"], enter_p=None
    ).set_index("term")
    assert allin.loc["sex[M]", "or_multi"] == pytest.approx(0.890049078475599, abs=TOL)


# ---------------------------------------------------------------------------------------------
# propensity matching
# ---------------------------------------------------------------------------------------------
def _sets(m: pd.DataFrame) -> dict[int, list[int]]:
    return {
        int(g.id[g.treat == 1].iloc[0]): sorted(g.id[g.treat == 0].tolist())
        for _, g in m.groupby("match_id")
    }


def _r_sets(treated, col1, col2):
    out = {}
    for t, a, b in zip(treated, col1, col2):
        cs = sorted(x for x in (a, b) if x is not None)
        if cs:
            out[t] = cs
    return out


R_TREATED = [3, 17, 18, 30, 33, 39, 40, 46, 47, 50, 51, 52, 57, 59, 63, 71, 78, 82, 85, 87]
NA = None


def test_propensity_match_equals_matchit(psm):
    # R: lp <- matchit(treat ~ age + sex, data, method = "nearest", distance = "glm",
    #                  link = "linear.logit", ratio = 2)$distance
    #    m <- matchit(treat ~ age + sex, data, method = "nearest", distance = lp * 1e6, ratio = 2)
    #    (lp * 1e6: works around MatchIt 4.5.1's integer abs() in nn_matchC_vec, see reference.R)
    #    m$match.matrix
    col1 = [75, 13, 61, 73, 45, 36, 4, 6, 28, 81, 2, 35, 20, 56, 27, 7, 31, 43, 38, 5]
    col2 = [55, 84, 70, 48, 88, 24, 68, 29, 44, 19, 90, 62, 67, 83, 15, 58, 9, 11, 53, 32]
    before = psm.copy()
    m = st.propensity_match(psm, "treat", ["age", "sex"], ratio=2)
    pd.testing.assert_frame_equal(psm, before)  # input untouched
    assert _sets(m) == _r_sets(R_TREATED, col1, col2)
    assert m.id.iloc[0] == 51  # m.order = "largest": treated unit with the largest score first
    # R: lp[1:5] (linear predictor of glm(treat ~ age + sex, binomial)); ids 2 and 3 are matched
    dist = m.set_index("id").distance
    assert dist.loc[[2, 3]].to_numpy() == pytest.approx(
        [-1.05788523606784, -1.06679047393391], abs=TOL
    )
    assert (m.groupby("match_id").treat.sum() == 1).all()
    assert (m.groupby("match_id").size() == 3).all()
    # R: m3 with distance = fitted PS * 1e6 gives the same matches here
    assert _sets(st.propensity_match(psm, "treat", ["age", "sex"], distance="ps")) == _sets(m)


@pytest.mark.parametrize(
    "cal, col1, col2",
    [
        (
            0.02,
            [75, NA, NA, NA, NA, 61, NA, NA, NA, NA, 2, NA, 20, NA, 27, NA, 31, NA, NA, 5],
            [NA, NA, NA, NA, NA, 36, NA, NA, NA, NA, NA, NA, 67, NA, 4, NA, NA, NA, NA, 32],
        ),
        (
            0.005,
            [75, NA, NA, NA, NA, 61, NA, NA, NA, NA, NA, NA, 20, NA, NA, NA, 31, NA, NA, 5],
            [NA, NA, NA, NA, NA, 36, NA, NA, NA, NA, NA, NA, NA, NA, NA, NA, NA, NA, NA, NA],
        ),
    ],
)
def test_propensity_match_caliper_equals_matchit(psm, cal, col1, col2):
    # R: matchit(treat ~ age + sex, data, method = "nearest", distance = lp * 1e6, ratio = 2, caliper = cal)
    m = st.propensity_match(psm, "treat", ["age", "sex"], ratio=2, caliper=cal)
    assert _sets(m) == _r_sets(R_TREATED, col1, col2)


def test_balance_table_matches_matchit_summary(psm):
    m = st.propensity_match(psm, "treat", ["age", "sex"], ratio=2)
    b = st.balance_table(psm, "treat", ["age", "sex"], m).set_index("covariate")
    # R: summary(m)$sum.all[c("age", "sex"), "Std. Mean Diff."]
    assert b.smd_before.to_numpy() == pytest.approx(
        [0.0713791224810536, 0.1292191476761845], abs=TOL
    )
    # R: summary(m)$sum.matched[c("age", "sex"), c("Std. Mean Diff.", "Means Control")]
    assert b.smd_after.to_numpy() == pytest.approx([-0.00565970880051784, 0.0], abs=TOL)
    assert b.mean_control_after.to_numpy() == pytest.approx([66.065, 0.55], abs=TOL)
    # R: caliper = 0.02 (unequal set sizes -> MatchIt weights)
    mc = st.propensity_match(psm, "treat", ["age", "sex"], ratio=2, caliper=0.02)
    bc = st.balance_table(psm, "treat", ["age", "sex"], mc).set_index("covariate")
    assert bc.smd_after.to_numpy() == pytest.approx([-0.00606397371483816, 0.0], abs=TOL)


def test_propensity_match_order_and_errors(psm):
    a = st.propensity_match(psm, "treat", ["age", "sex"], order="random", rng=3)
    b = st.propensity_match(psm, "treat", ["age", "sex"], order="random", rng=3)
    pd.testing.assert_frame_equal(a, b)
    assert (a.groupby("match_id").treat.sum() == 1).all()
    assert a[a.treat == 0].id.is_unique  # without replacement
    bad = psm.copy()
    bad.loc[0, "age"] = np.nan
    with pytest.raises(ValueError, match="age"):
        st.propensity_match(bad, "treat", ["age", "sex"])


# ---------------------------------------------------------------------------------------------
# nomogram
# ---------------------------------------------------------------------------------------------
LRM_COEF = {"age": 0.0519546002079820, "bmi": -0.0535777510108437, "male": -0.1164786734231765}
LRM_INTERCEPT = -2.3433989599487206
VALUES = {"age": [40, 50, 60, 70, 80, 90], "bmi": [15, 20, 25, 30, 35, 40], "male": [0, 1]}


def test_nomogram_points_match_rms():
    # R: fl <- lrm(group ~ age + bmi + male, data = bd)
    #    nom <- nomogram(fl, age = c(40, ..., 90), bmi = c(15, ..., 40), male = c(0, 1), fun = plogis,
    #                    fun.at = c(.1, .3, .5, .7, .9), lp = TRUE)
    nomo = st.nomogram_points(LRM_COEF, LRM_INTERCEPT, VALUES)
    pts = nomo.points.groupby("variable").points.apply(list)
    assert pts["age"] == pytest.approx([0, 20, 40, 60, 80, 100], abs=TOL)
    assert pts["bmi"] == pytest.approx(
        [
            51.5620857405928,
            41.2496685924742,
            30.9372514443557,
            20.6248342962371,
            10.3124171481185,
            0.0,
        ],
        abs=TOL,
    )
    assert pts["male"] == pytest.approx([4.48386371781883, 0.0], abs=TOL)
    # R: nom$lp$x at nom$lp$x.real = -2.5, -2, ..., 2 (linear axis, exact)
    lp_x = [
        0.95482076224527,
        20.20239452851142,
        39.44996829477758,
        58.69754206104373,
        77.94511582730989,
        97.19268959357603,
        116.44026335984219,
        135.68783712610835,
        154.93541089237451,
        174.18298465864066,
    ]
    lp_real = np.arange(-2.5, 2.01, 0.5)
    assert (lp_real - nomo.lp_at_zero) * nomo.scale == pytest.approx(lp_x, abs=TOL)
    # R: nom[["Predicted Value"]]$x at 0.1, 0.3, 0.5, 0.7 (rms inverts plogis by interpolation,
    # hence the looser tolerance; p = 0.5 sits on a grid point and agrees to 1e-9)
    tp = nomo.probability_to_total_points([0.1, 0.3, 0.5, 0.7])
    assert tp == pytest.approx(
        [12.6101524205752, 64.57581935764, 97.192689593576, 129.809559829512], abs=1e-3
    )
    assert tp[2] == pytest.approx(97.192689593576, abs=1e-8)
    assert nomo.total_points_to_probability(tp) == pytest.approx([0.1, 0.3, 0.5, 0.7])


def test_nomogram_score_consistent_with_model(base):
    nomo = st.nomogram_points(LRM_COEF, LRM_INTERCEPT, VALUES)
    d = base.assign(male=(base.sex == "M").astype(int))
    tot = nomo.score(d)
    lp = LRM_INTERCEPT + sum(b * d[v] for v, b in LRM_COEF.items())
    assert nomo.total_points_to_lp(tot) == pytest.approx(lp.to_numpy())
    auto = st.nomogram_points(LRM_COEF, LRM_INTERCEPT, data=d)
    assert set(auto.points.variable) == {"age", "bmi", "male"}
    assert auto.points.points.max() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="bmi"):
        st.nomogram_points(LRM_COEF, LRM_INTERCEPT, {"age": [40, 90], "male": [0, 1]})


def test_calibration_of_separated_probabilities_states_it_and_warns_nothing():
    """Probabilities that separate the outcome (a perfect test AUC on a small split) have no
    maximum-likelihood calibration slope: it is reported as not estimable, not as the large
    arbitrary number the GLM stops at (it gave 150 on the real-lumbar worked example), and no
    statsmodels separation or overflow warning reaches the report."""
    import warnings

    y = np.array([0] * 10 + [1] * 10)
    p = np.r_[np.linspace(0.01, 0.4, 10), np.linspace(0.6, 0.999999, 10)]
    pred = pd.DataFrame({"model": "m", "split": "test", "patient_id": range(20), "y_true": y,
                         "score": p, "score_kind": "probability"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = st.calibration_slope_intercept(y, p)
        cal = st.calibration(pred, hl_groups=4, hl_dof="g", min_expected=0.0,
                             reduce_groups=False)
    assert r.separated and np.isnan(r.slope) and np.isfinite(r.intercept)
    row = cal.iloc[0]
    assert np.isnan(row.calibration_slope) and np.isfinite(row.calibration_intercept)
    assert "not estimable" in row.note and "separate the outcome" in row.note
    # one event below a non-event: no separation, a finite slope as before
    p2 = p.copy()
    p2[[9, 10]] = p2[[10, 9]]
    assert not st.calibration_slope_intercept(y, p2).separated


def test_logistic_table_says_when_a_fit_did_not_converge_instead_of_warning():
    """A predictor that splits the outcome (separation, common in a small training set) makes
    the logistic fit diverge: the table's ``converged`` column and ``or_95ci`` say so, and no
    statsmodels ConvergenceWarning / overflow warning reaches the report."""
    import warnings

    g = np.random.default_rng(3)
    df = pd.DataFrame({"x": g.normal(size=40), "z": g.normal(size=40)})
    df["y"] = (df.x > 0).astype(int)  # x separates y perfectly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = st.logistic_table(df, "y", ["x", "z"], multivariable=False).set_index("term")
        both = st.univariate_multivariate(df, "y", ["x", "z"], enter_p=None)
    assert not t.loc["x", "converged"] and t.loc["z", "converged"]
    assert t.loc["x", "or_95ci"].endswith("(not converged)")
    assert not t.loc["z", "or_95ci"].endswith("(not converged)")
    assert set(both.term) == {"x", "z"}


def test_evaluate_says_why_a_perfect_auc_has_no_delong_ci():
    """AUC 1 on a small held-out split (the real-lumbar worked example's test set): DeLong's
    variance is 0, so no CI is printed, and the table's note says why instead of a bare NaN."""
    y = np.array([0] * 8 + [1] * 6)
    pred = pd.DataFrame({"model": "m", "split": "test", "patient_id": range(14), "y_true": y,
                         "score": np.r_[np.linspace(0.05, 0.4, 8), np.linspace(0.6, 0.9, 6)],
                         "score_kind": "probability"})
    row = st.evaluate(pred, ci="delong").iloc[0]
    assert row.auc == 1.0 and np.isnan(row.ci_low) and np.isnan(row.ci_high)
    assert "separate the classes completely" in row.note


class _Noisy:
    """A classifier that raises a vcfnb-style notice on every fit (as LassoSelector does when it
    falls back to a smaller lambda) and a foreign warning that must pass through."""

    def fit(self, X, y):
        import warnings

        from sklearn.linear_model import LogisticRegression

        warnings.warn("LassoSelector: 0 non-zero coefficient(s); using a smaller lambda")
        self.m_ = LogisticRegression().fit(X, y)
        self.classes_ = self.m_.classes_
        return self

    def predict_proba(self, X):
        return self.m_.predict_proba(X)

    def get_params(self, deep=True):
        return {}

    def set_params(self, **p):
        return self


def test_permutation_refit_notices_are_counted_and_said_once():
    """A pipeline rule that fires in every shuffled-label refit printed one warning per refit
    (tens of stderr lines in the vcf report); now it is counted and said once."""
    import warnings

    from vcfnb import models

    g = np.random.default_rng(0)
    X = g.normal(size=(40, 2))
    y = (X[:, 0] + g.normal(size=40) > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = models.permutation_test(lambda: _Noisy(), X[:30], y[:30], X_test=X[30:],
                                      y_test=y[30:], n_permutations=7, rng=1)
    msgs = [str(w.message) for w in caught]
    assert res.refit_warnings == {"LassoSelector": 7}
    summary = [m for m in msgs if m.startswith("permutation test:")]
    assert len(summary) == 1 and "LassoSelector fell back to its rule in 7 of 7 refits" in summary[0]
    # the refit on the real labels keeps its own notice; none of the 7 shuffled refits prints one
    assert sum(m.startswith("LassoSelector:") for m in msgs) == 1


def test_calibration_by_class_tells_the_three_patterns_apart():
    """One class moving alone, both moving together, the classes moving towards each other;
    a large move of a few patients within sampling noise is said as such."""
    jitter = np.tile([-0.02, 0.0, 0.02, 0.01, -0.01], 8)

    def pred(test0, test1, n_test=10):
        n = 40 + 2 * n_test
        return pd.DataFrame({
            "model": "m", "split": ["train_oof"] * 40 + ["test"] * (2 * n_test),
            "patient_id": range(n), "y_true": [0] * 20 + [1] * 20 + [0] * n_test + [1] * n_test,
            "score": np.r_[[0.2] * 20, [0.8] * 20, [test0] * n_test, [test1] * n_test]
            + np.resize(jitter, n), "score_kind": "probability"})

    cases = {(0.45, 0.8): "only the patients without the outcome moved: on this split they "
                          "score higher",
             (0.2, 0.6): "only the patients with the outcome moved: on this split they score "
                         "lower",
             (0.35, 0.95): "both classes moved the same way",
             (0.35, 0.65): "the classes moved towards each other",
             (0.25, 0.75): "neither class moved by 0.1 or more"}
    for (a, b), expected in cases.items():
        t = st.calibration_by_class(pred(a, b))
        assert list(t.split) == ["test", "test"] and list(t.n) == [10, 10]
        assert t.difference.tolist() == pytest.approx([a - 0.2, b - 0.8], abs=0.02)
        assert expected in st.class_shift_sentence(t, "m"), (a, b)
    # two patients per class, spread as widely as the training ones: +0.15 is noise here
    noisy = pred(0.35, 0.8, n_test=2)
    noisy.loc[noisy.split == "test", "score"] = [0.05, 0.65, 0.7, 0.9]
    noisy.loc[noisy.split == "train_oof", "score"] = np.r_[np.linspace(0.0, 0.4, 20),
                                                            np.linspace(0.6, 1.0, 20)]
    t = st.calibration_by_class(noisy)
    assert t.p_value.iloc[0] > 0.05 and t.difference.iloc[0] == pytest.approx(0.15)
    assert "no class moved beyond the sampling noise" in st.class_shift_sentence(t, "m")
    # decision scores are not probabilities: nothing to compare
    d = pred(0.5, 0.5).assign(score_kind="decision")
    assert st.calibration_by_class(d).empty
    assert "do not hold both classes" in st.class_shift_sentence(
        st.calibration_by_class(pred(0.5, 0.5)), "m", "external")
    # a model scored on training rows by resubstitution only has no out-of-fold reference
    resub = pred(0.5, 0.5).replace({"split": {"train_oof": "train"}})
    t = st.calibration_by_class(resub, splits=["test"])
    assert t.reference_mean.isna().all()
    assert "no out-of-fold training probabilities" in st.class_shift_sentence(t, "m")


def test_class_shift_text_one_paragraph_per_model_and_split():
    rows = []
    for model in ("a", "b"):
        for split, shift in (("train_oof", 0.0), ("test", 0.0), ("external", 0.3)):
            for cls, base in ((0, 0.2), (1, 0.8)):
                for k in range(6):
                    rows.append({"model": model, "split": split, "patient_id": f"{split}{cls}{k}",
                                 "y_true": cls, "score": base + shift + 0.01 * k,
                                 "score_kind": "probability"})
    t = st.calibration_by_class(pd.DataFrame(rows), splits=["test", "external"])
    text = st.class_shift_text(t, ["b", "absent"], split_names={"test": "validation"})
    paragraphs = text.split("\n\n")
    assert [p.split(":")[0] for p in paragraphs] == ["b, validation", "b, external"]
    assert "neither class moved" in paragraphs[0]
    assert "both classes moved the same way" in paragraphs[1]
    assert "no calibration comparison by class" in st.class_shift_text(t.iloc[:0], ["a"])
