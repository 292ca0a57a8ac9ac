"""Simulated OVF cohort (seed 003): contract, determinism, pool size, class effects and signal=0."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import statsmodels.formula.api as smf

import vcfnb as vc
from vcfnb.synth import ovf


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ovf_small")
    return vc.synth.make_cohort("ovf", out, size="smoke", seed=3, signal=1.0, n_fractures=4)


def _digest(folder):
    h = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "cohort.json":
            h[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


def test_contract_shapes_and_pool(small_cohort):
    c = vc.io.load_cohort(small_cohort)
    assert c.problems.empty, c.problems
    assert c.simulated
    assert "SIMULATED" in (small_cohort / "README.md").read_text(encoding="utf-8")
    cases = c.cases
    # 4 fracture patients + a control pool 3x that size (smoke default), not pre-matched
    assert (cases.group == "fracture").sum() == 4 and (cases.outcome == 1).sum() == 4
    assert (cases.group == "pool").sum() == 12 and (cases.outcome == 0).sum() == 12
    assert set(cases.columns) >= {"patient_id", "outcome", "age", "sex", "bmi", "vbmd"}
    assert set(cases.sex) <= {"F", "M"}
    # one row per level and reader, labels 1..4 = T11..L2 in one mask file per reader
    assert len(c.rois) == len(cases) * 4 * 2
    assert dict(zip(c.rois.roi[:4], c.rois.label[:4])) == ovf.LEVELS
    r = c.rois.iloc[0]
    img, msk = sitk.ReadImage(r.image), sitk.ReadImage(r["mask"])
    assert img.GetSpacing() == pytest.approx((1.0, 1.0, ovf.SLICE_MM))
    assert img.GetDirection() == pytest.approx(vc.synth._phantom.AXIAL_DIRECTION)
    assert max(img.GetSize()) <= 80  # small crops around the bodies
    labels = np.unique(sitk.GetArrayViewFromImage(msk))
    assert set(labels) == {0, 1, 2, 3, 4}
    # vertebral order along z: L2 (4) lowest, T11 (1) highest (axial, inferior -> superior)
    arr = sitk.GetArrayViewFromImage(msk)
    zc = {lab: np.nonzero(arr == lab)[0].mean() for lab in (1, 2, 3, 4)}
    assert zc[4] < zc[3] < zc[2] < zc[1]
    # HU plausible: cancellous core ~ vBMD through the stated calibration line
    hu = sitk.GetArrayViewFromImage(img)
    core = sitk.GetArrayFromImage(vc.preprocess.split_cortical_cancellous(msk, 3.0, label=3)[1]) != 0
    bmd = ovf.hu_to_bmd(hu[core].mean())
    vbmd = cases.set_index("patient_id").loc[r.patient_id, "vbmd"]
    assert abs(bmd - vbmd) < 25
    # the second reader differs slightly
    m2 = sitk.GetArrayFromImage(sitk.ReadImage(c.rois.iloc[4]["mask"]))
    d = vc.preprocess.dice(arr == 1, m2 == 1)
    assert 0.8 < d < 1.0


def test_deterministic(small_cohort, tmp_path):
    again = vc.synth.make_cohort("ovf", tmp_path / "again", size="smoke", seed=3, signal=1.0,
                                 n_fractures=4)
    assert _digest(small_cohort) == _digest(again)
    other = vc.synth.make_cohort("ovf", tmp_path / "other", size="smoke", seed=4, signal=1.0,
                                 n_fractures=4)
    assert _digest(small_cohort) != _digest(other)


def test_pool_ratio_must_allow_matching(tmp_path):
    with pytest.raises(ValueError, match="pool_ratio"):
        ovf.generate(tmp_path, size="smoke", n_fractures=2, pool_ratio=2)


def test_sampling_differs_but_matching_balances():
    """The pool is younger / less often female (matching matters) at every signal."""
    pts = ovf._patients(80, 320, seed=0, signal=0.0)
    frac, pool = pts[pts.outcome == 1], pts[pts.outcome == 0]
    assert frac.age.mean() - pool.age.mean() > 2
    assert (frac.sex == "F").mean() > (pool.sex == "F").mean()
    matched = vc.stats.propensity_match(pts.drop(columns=["_vbmd", "_trab", "_cort"]), "outcome",
                                        ["age", "sex"], ratio=2, caliper=0.2)
    bal = vc.stats.balance_table(pts, "outcome", ["age", "sex"], matched=matched)
    assert (bal.smd_before.abs() > 0.2).any()
    assert (bal.smd_after.abs() < 0.1).all()
    assert (matched.outcome == 0).sum() >= 150  # close to 1:2 for 80 fracture patients


def _outcome_p(df, var):
    fit = smf.ols(f"{var} ~ outcome + age + C(sex)", data=df).fit()
    return float(fit.pvalues["outcome"])


@pytest.mark.parametrize("var", ["_vbmd", "bmi", "_trab", "_cort"])
def test_clinical_and_latent_effects_scale_with_signal(var):
    none = ovf._patients(200, 600, seed=1, signal=0.0)
    full = ovf._patients(200, 600, seed=1, signal=1.0)
    assert _outcome_p(none, var) > 0.05 / 4  # Bonferroni over the four variables
    assert _outcome_p(full, var) < 1e-4


def _image_stats(signal, n=14, seed=5):
    """Simple first-order statistics of the cancellous core and cortical shell of L1."""
    pts = ovf._patients(n, n, seed=seed, signal=signal)
    rows = []
    for _, p in pts.iterrows():
        img, masks, _ = ovf._phantom(p, seed, readers=1)
        m = sitk.GetImageFromArray(masks[0])
        m.SetSpacing((1.0, 1.0, ovf.SLICE_MM))
        cort, canc = vc.preprocess.split_cortical_cancellous(m, 2.0, label=3)
        c = sitk.GetArrayViewFromImage(cort) != 0
        k = sitk.GetArrayViewFromImage(canc) != 0
        rows.append({"outcome": p.outcome, "age": p.age, "sex": p.sex,
                     "canc_mean": img[k].mean(), "canc_sd": img[k].std(),
                     "cort_mean": img[c].mean(), "cort_sd": img[c].std()})
    return pd.DataFrame(rows)


def test_signal_zero_images_have_no_class_effect():
    none = _image_stats(0.0)
    ps = [_outcome_p(none, v) for v in ("canc_mean", "canc_sd", "cort_mean", "cort_sd")]
    assert min(ps) > 0.05 / len(ps), ps
    strong = _image_stats(2.0)
    ps = [_outcome_p(strong, v) for v in ("canc_mean", "canc_sd", "cort_mean", "cort_sd")]
    assert min(ps) < 0.001, ps


# ---------------------------------------------------------------------------------------------
# study glue (vcfnb.studies.ovf) on the simulated cohort
# ---------------------------------------------------------------------------------------------
def test_compartments_density_and_radscore_linearity(small_cohort, tmp_path):
    from vcfnb.studies import ovf as study

    c = vc.io.load_cohort(small_cohort)
    rois = study.select_rois(c.rois, c.cases, reader="1")
    voi = study.compartment_rois(rois, tmp_path / "comp", shell_mm=2.0)
    assert len(voi) == len(c.cases) * 8
    assert set(voi.roi) == {f"{lv}_{cp}" for lv in ovf.LEVELS for cp in ("cortical", "cancellous")}
    assert voi.derived.all() and (voi.n_voxels > 200).all()
    # a re-run reuses the derived masks (same files, same labels)
    again = study.compartment_rois(rois, tmp_path / "comp", shell_mm=2.0)
    pd.testing.assert_frame_equal(voi, again)
    # cortical + cancellous = the whole vertebra, disjoint
    r = voi.iloc[0]
    src = rois[(rois.patient_id == r.patient_id) & (rois.roi == r.level)].iloc[0]
    whole = sitk.GetArrayFromImage(sitk.ReadImage(src["mask"])) == int(src.label)
    comp = sitk.GetArrayFromImage(sitk.ReadImage(r["mask"]))
    assert np.array_equal((comp == 1) | (comp == 2), whole)
    # already-split rows are used as given
    given = voi.iloc[:2].assign(roi=["T11_cortical", "T11_cancellous"])
    kept = study.compartment_rois(given.drop(columns=["level", "compartment", "derived", "n_voxels"]),
                                  tmp_path / "comp2")
    assert not kept.derived.any() and list(kept["mask"]) == list(given["mask"])
    # vBMD read-out from the extracted mean CT number (one source for table 1 and the models):
    # it is the mean of the image in the cancellous VOI, and the simulated line recovers the
    # shipped vBMD (cancellous VOI incl. partial volume)
    some = voi[voi.patient_id.isin(c.cases.patient_id[:3])].reset_index(drop=True)
    feats = vc.features.extract(some, {"setting": {"label": 1}, "imageType": {"Original": {}},
                                       "featureClass": {"firstorder": ["Mean"]}}, progress=False)
    dens = study.vbmd_table(feats, some, slope=ovf.HU_TO_BMD_SLOPE, intercept=ovf.HU_TO_BMD_INTERCEPT)
    r = some[some.compartment == "cancellous"].iloc[0]
    img = sitk.GetArrayFromImage(sitk.ReadImage(r["image"])).astype(float)
    m = sitk.GetArrayFromImage(sitk.ReadImage(r["mask"])) == int(r.label)
    assert dens.mean_hu.iat[0] == pytest.approx(img[m].mean(), rel=1e-9)
    agree = study.vbmd_agreement(dens, c.cases)
    assert agree.pearson_r.iat[0] > 0.9 and abs(agree.mean_difference.iat[0]) < 15
    # derived masks go where they are told (the run's cache), never next to the source masks
    assert all(str(m).startswith(str(tmp_path / "comp")) for m in voi["mask"])


def test_given_split_is_kept_and_external_rows_are_not_matched():
    """Issue 17 defect 1: a split in cases.csv is the split used (after matching)."""
    from vcfnb.studies import ovf as study

    g = np.random.default_rng(0)
    n = 90
    cases = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)],
                          "outcome": (np.arange(n) % 3 == 0).astype(int),
                          "age": g.normal(70, 8, n), "sex": g.choice(["F", "M"], n),
                          "split": np.where(np.arange(n) < 60, np.where(np.arange(n) % 4 == 1,
                                                                        "test", "train"),
                                            "external")})
    matched, balance = study.match_controls(cases, ratio=1, caliper=None, rng=0)
    ext = cases[cases.split == "external"]
    assert set(ext.patient_id) <= set(matched.patient_id)  # external: kept, not matched
    internal = cases[cases.split != "external"]
    assert int(balance.n_treated_before.iat[0]) == int((internal.outcome == 1).sum())
    split = study.split_patients(matched, test_size=0.5, random_state=0)
    assert split.attrs["source"] == "given"
    given = cases.set_index("patient_id").split
    pd.testing.assert_series_equal(split, given.reindex(split.index), check_names=False)
    # an incomplete split column is refused, not silently re-drawn
    broken = matched.assign(split=matched.split.where(matched.index % 5 != 0, ""))
    with pytest.raises(ValueError, match="split column"):
        study.split_patients(broken)
    with pytest.raises(ValueError, match="lacks train or test"):  # no test patients given
        study.split_patients(matched.assign(split=matched.split.replace("test", "train")))
    # without a split column: stratified draw with test_size
    drawn = study.split_patients(matched.drop(columns="split"), test_size=0.3, random_state=0)
    assert drawn.attrs["source"].startswith("stratified") and set(drawn) == {"train", "test"}


def rng_features(voi):
    g = np.random.default_rng(0)
    return {f"original_firstorder_F{i}": g.normal(size=len(voi)) + (voi.n_voxels.to_numpy() / 1e4) * i
            for i in range(6)}


def test_requirements_list_every_problem_at_once(small_cohort):
    """Issue 17: the declared requirements are checked before any extraction, all at once."""
    from vcfnb import contract
    from vcfnb.studies import ovf as study

    c = vc.io.load_cohort(small_cohort)
    params = {"outcome": "outcome", "test_size": 0.3, "oof_folds": 2, "lasso_cv": 2,
              "require_outcome": True}
    ok = contract.check(study.REQUIREMENTS, c.cases, c.rois, params)
    assert set(ok["requirement"]) <= {"folds"}, ok  # 4 fracture patients: only folds can fail
    bad = contract.check(study.REQUIREMENTS, c.cases.drop(columns=["age"]),
                         c.rois.assign(sequence="MR"), {**params, "lasso_cv": 50})
    where = set(bad["where"])
    assert {"cases.csv: age", "rois.csv: sequence CT", "parameter lasso_cv"} <= where, bad
    assert study.REQUIREMENTS.main_models == ("combined",)
    # features-only (no outcome, no matching): the matching covariates are not required
    fo = contract.check(study.REQUIREMENTS, c.cases.drop(columns=["age", "sex", "outcome"]),
                        c.rois, {**params, "require_outcome": False}, features_only=True)
    assert fo.empty, fo


# ---------------------------------------------------------------------------------------------
# OVFModel: per-vertebra radscores, links fitted on out-of-fold radscores
# ---------------------------------------------------------------------------------------------
def _block_table(n=60, seed=0):
    """A patient block table (4 levels x 2 compartments x 5 features) with signal in f0."""
    g = np.random.default_rng(seed)
    y = pd.Series(np.r_[np.ones(n // 3), np.zeros(n - n // 3)].astype(int),
                  index=pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id"))
    cols = {}
    for lv in ovf.LEVELS:
        for comp in ("cortical", "cancellous"):
            for j in range(5):
                cols[f"CT_{lv}_{comp}_f{j}"] = g.normal(size=n) + (0.8 * y.to_numpy() if j == 0 else 0)
            cols[f"CT_{lv}_{comp}_original_firstorder_Mean"] = 150 - 30 * y.to_numpy() + g.normal(0, 20, n)
    return pd.DataFrame(cols, index=y.index), y


def test_ovf_model_links_are_fitted_on_out_of_fold_radscores():
    """The logistic link's training inputs are out-of-fold radscores: each training patient's
    score comes from the fold radscores fitted without that patient (old code: the link was
    fitted on radscores of the same patients that fitted them)."""
    from sklearn.linear_model import LogisticRegression

    from vcfnb.studies import ovf as study

    X, y = _block_table()
    m = study.OVFModel(k=4, lasso_cv=3, oof_folds=3, random_state=0).fit(X, y)
    rows = study.vertebra_rows(X)
    assert len(m.folds_) == 3
    for j, fold_models in enumerate(m.folds_):
        held = m.oof_.index[m.oof_.fold == j]
        rs = fold_models["cancellous"]
        # fitted per vertebra, on the other folds' patients only (4 rows per patient)
        assert rs.pipeline_.named_steps["scaler"].n_samples_seen_ == 4 * (len(X) - len(held))
        own = pd.Series(rs.radscore(rows), index=rows.index).groupby(level=0).mean()
        np.testing.assert_allclose(m.oof_.loc[held, "radscore_cancellous"], own[held], rtol=1e-12)
    inputs = m.oof_[["radscore_cortical", "radscore_cancellous", "vbmd"]]
    ref = LogisticRegression(C=np.inf, max_iter=5000).fit(inputs, y)
    np.testing.assert_allclose(m.link_.coef_, ref.coef_, rtol=1e-6)
    # in-sample radscores (what the old link saw) differ from the out-of-fold ones
    in_sample = m.link_inputs(X)["radscore_cancellous"]
    assert not np.allclose(in_sample, m.oof_.radscore_cancellous)
    # new patients: mean of the fold radscores, patient score = mean of its vertebrae's
    per_v = study.vertebra_scores(m, X).groupby("patient_id").radscore_cancellous.mean()
    np.testing.assert_allclose(per_v.reindex(X.index), in_sample, rtol=1e-10)
    # vBMD from the cancellous mean CT numbers through the HU -> BMD line
    hu = X[[f"CT_{lv}_cancellous_original_firstorder_Mean" for lv in ovf.LEVELS]].mean(axis=1)
    np.testing.assert_allclose(m.oof_.vbmd, 0.8 * hu + 4.0)


def test_ovf_model_with_inputs_equals_a_fresh_fit_and_uses_few_columns():
    from vcfnb.studies import ovf as study

    X, y = _block_table(seed=1)
    tr, te = X.index[np.arange(len(X)) % 4 != 0], X.index[np.arange(len(X)) % 4 == 0]
    m = study.OVFModel(k=4, lasso_cv=3, oof_folds=3, random_state=0).fit(X.loc[tr], y[tr])
    for name in ("cortical", "vBMD"):
        fresh = study.OVFModel(inputs=study.MODEL_INPUTS[name], k=4, lasso_cv=3, oof_folds=3,
                               random_state=0).fit(X.loc[tr], y[tr])
        np.testing.assert_array_equal(m.with_inputs(study.MODEL_INPUTS[name]).predict_proba(X.loc[te]),
                                      fresh.predict_proba(X.loc[te]))
    for name in study.MODEL_INPUTS:  # each model reads only its own columns (the saved ones)
        one = m.with_inputs(study.MODEL_INPUTS[name])
        cols = one.used_columns(X.columns)
        assert len(cols) < X.shape[1]
        np.testing.assert_array_equal(one.predict_proba(X.loc[te, cols]), one.predict_proba(X.loc[te]))
    # the permutation evaluator's cached preparation gives the same test AUC as a plain refit
    from sklearn.metrics import roc_auc_score

    ev = study.refit_test_auc(X.loc[tr], X.loc[te], y[te])
    assert ev(study.OVFModel(k=4, lasso_cv=3, oof_folds=3, random_state=0), X.loc[tr], y[tr]) \
        == pytest.approx(roc_auc_score(y[te], m.predict_proba(X.loc[te])[:, 1]), abs=1e-12)
