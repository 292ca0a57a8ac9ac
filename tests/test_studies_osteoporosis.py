"""Study rules of seed 002: requirements, DXA rule, given split, single reader, radscore link."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from vcfnb import contract, features, models, reliability
from vcfnb.studies import osteoporosis as study

MODULE = Path(study.__file__)
PARAMS = {"outcome": "outcome", "outcome_from_dxa": True, "sequences": ["T1", "T2"],
          "cv_folds": 3, "lasso_cv": 2, "lasso_lambda": 0.0, "test_size": 0.3}


def _cohort(n=12, readers=("1",)):
    g = np.random.default_rng(0)
    cases = pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(n)],
                          "age": g.uniform(55, 80, n).round(1),
                          "t_score": np.where(np.arange(n) % 2, -2.0, 0.5),
                          "z_score": 0.0, "outcome": np.arange(n) % 2})
    rois = pd.DataFrame([{"patient_id": p, "roi": lev, "sequence": s, "reader": r}
                         for p in cases.patient_id for lev in study.LEVELS for s in ("T1", "T2")
                         for r in readers])
    return cases, rois


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


def test_dxa_rule_without_dxa_columns():
    r = study.dxa_rule(pd.DataFrame({"patient_id": ["x", "y"]}))
    assert (r.dxa_class == "unknown").all() and r.abnormal.isna().all()
    cases = study.label_cases(pd.DataFrame({"patient_id": ["x", "y"]}), r)
    assert len(cases) == 2 and cases.outcome.isna().all()


def test_dxa_rule_never_falls_back_to_the_outcome_column():
    """Defect 6: a misnamed T-score labels nobody; the cohort's outcome is NOT used instead,
    and the report sentence says how many the rule labelled."""
    cases, _ = _cohort()
    cases = cases.rename(columns={"t_score": "T_score"})
    rule = study.dxa_rule(cases)
    labelled = study.label_cases(cases, rule, from_dxa=True)
    assert labelled["outcome"].isna().all()  # the old code took cases.outcome here
    text = study.outcome_source(cases, labelled, rule, from_dxa=True)
    assert "labelled none of the 12 patients" in text
    # with the rule off, the cohort's column is used and the sentence says so
    given = study.label_cases(cases, rule, from_dxa=False)
    assert given["outcome"].tolist() == cases["outcome"].tolist()
    assert "column as given" in study.outcome_source(cases, given, rule, from_dxa=False)


def test_preflight_names_the_dxa_columns():
    """Defect 6: with outcome_from_dxa the DXA columns are required; a misnamed one is named,
    with the rename hint; features-only runs do not need them."""
    cases, rois = _cohort()
    bad = cases.rename(columns={"t_score": "T_score"}).drop(columns="outcome")
    unmet = contract.check(study.REQUIREMENTS, bad, rois, PARAMS)
    assert unmet.problem.str.contains("'t_score' is missing").any()
    assert unmet.fix.str.contains("'T_score' exists").any()
    assert not unmet.problem.str.contains("'outcome'").any()  # the rule makes the outcome
    assert contract.check(study.REQUIREMENTS, bad, rois, PARAMS, features_only=True).empty
    assert contract.check(study.REQUIREMENTS, cases, rois, PARAMS).empty
    own = contract.check(study.REQUIREMENTS, bad, rois, {**PARAMS, "outcome_from_dxa": False})
    assert own.problem.str.contains("'outcome' is missing").tolist() == [True]


def test_preflight_sequences_rois_and_folds_at_once():
    cases, rois = _cohort()
    rois = rois[rois.sequence == "T1"].replace({"roi": {"L4": "L5"}})
    unmet = contract.check(study.REQUIREMENTS, cases, rois, {**PARAMS, "cv_folds": 10})
    problems = " | ".join(unmet.problem)
    assert "no ROI of sequence 'T2'" in problems and "no ROI named 'L4'" in problems
    assert "parameter 'cv_folds' = 10" in problems
    assert len(unmet) == 3


@pytest.fixture(scope="module")
def synth_cohort(tmp_path_factory):
    from vcfnb import synth

    return synth.make_cohort("osteoporosis", tmp_path_factory.mktemp("op_synth"), size="smoke",
                             seed=3)


def _start(folder, out, **params):
    from vcfnb import report

    return report.start_run("osteoporosis_mri", {
        "cohort_dir": str(folder), "out_dir": str(out / "report"), "cache_dir": str(out / "cache"),
        "outcome": "outcome", "outcome_from_dxa": True, "sequences": ["T1", "T2"],
        "cv_folds": 2, "lasso_cv": 2, "lasso_lambda": 0.13, "test_size": 0.3, **params})


def test_dxa_only_cohort_runs_and_misnamed_column_is_refused(synth_cohort, tmp_path):
    """Defect 6 through the notebook's first call: a cohort with DXA columns and no outcome
    column passes; with a misnamed T-score the pre-flight names it, before any extraction."""
    import shutil

    from vcfnb.contract import CohortRequirementsError

    folder = tmp_path / "dxa_only"
    shutil.copytree(synth_cohort, folder)
    cases = pd.read_csv(folder / "cases.csv").drop(columns="outcome").iloc[:12]  # small: fast
    cases.to_csv(folder / "cases.csv", index=False)
    rois = pd.read_csv(folder / "rois.csv")
    rois[rois.patient_id.isin(cases.patient_id)].to_csv(folder / "rois.csv", index=False)
    run = _start(folder, tmp_path / "ok")
    assert "outcome" not in run.cohort.cases and run.status == "running"
    cases.rename(columns={"t_score": "T_score"}).to_csv(folder / "cases.csv", index=False)
    with pytest.raises(CohortRequirementsError, match="'t_score' is missing"):
        _start(folder, tmp_path / "bad")
    assert not (tmp_path / "bad" / "cache").exists()


def test_given_split_is_honoured():
    """Defect 1: a cohort with a given split keeps exactly those test patients."""
    cases, _ = _cohort(20)
    test_ids = ["P00", "P01", "P02", "P03", "P09", "P10", "P17"]
    cases["split"] = np.where(cases.patient_id.isin(test_ids), "test", "train")
    cases.loc[cases.patient_id.isin(["P18", "P19"]), "split"] = "external"
    assert study.given_split(cases)
    for state in (0, 1, 2):
        out = study.split_internal(cases, test_size=0.3, random_state=state)
        assert sorted(out.patient_id[out.split == "test"]) == test_ids
        assert sorted(out.patient_id[out.split == "external"]) == ["P18", "P19"]


def test_split_drawn_only_without_one():
    cases, _ = _cohort(20)
    cases["split"] = [""] * 18 + ["external"] * 2
    assert not study.given_split(cases)
    out = study.split_internal(cases, test_size=0.3, random_state=0)
    assert out.split.value_counts().to_dict() == {"train": 12, "test": 6, "external": 2}
    assert out.groupby("split").outcome.mean()["test"] == 0.5  # stratified
    cases.loc[0, "split"] = "test"  # given for one internal patient only: refused, not re-drawn
    with pytest.raises(ValueError, match="some internal patients but not all"):
        study.split_internal(cases)


def test_split_is_the_generic_study_split():
    """The study draws and validates its split with vcfnb.models.study_split (no copy of it)."""
    cases, _ = _cohort(20)
    cases["split"] = [""] * 17 + ["external"] * 3
    for state in (0, 7):
        want = models.study_split(cases, design="holdout", test_size=0.3, random_state=state)
        got = study.split_internal(cases, test_size=0.3, random_state=state)
        assert got["split"].tolist() == want.tolist()
    assert not hasattr(study, "train_test_split")
    with pytest.raises(ValueError, match="split must be train, test, external or empty"):
        study.split_internal(cases.assign(split="validation"))


def test_single_reader_mode():
    """Defect 4: reader 2 is optional: no unmet requirement, the ICC step is marked skipped,
    and only reader 1 is extracted."""
    cases, rois = _cohort()
    assert contract.check(study.REQUIREMENTS, cases, rois, PARAMS).empty
    assert contract.reader_modes(study.REQUIREMENTS, rois) == {"2": False}
    picked = study.rois_for_extraction(rois, cases, reliability_patients=4, rng=0)
    assert set(picked.reader) == {"1"} and not picked.icc_subset.any()
    _, both = _cohort(readers=("1", "2"))
    assert contract.reader_modes(study.REQUIREMENTS, both) == {"2": True}
    picked = study.rois_for_extraction(both, cases, reliability_patients=4, rng=0)
    assert picked.loc[picked.reader == "2", "patient_id"].nunique() == 4


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


def test_reader_icc_and_per_patient_features(rng):
    f = _features(rng)
    icc = reliability.reader_icc(f, threshold=0.75)
    assert set(icc.sequence) == {"T1", "T2"}
    kept = icc.set_index(["sequence", "feature"])["kept"]
    assert kept[("T1", "f_a")] and not kept[("T1", "f_b")]
    X = features.per_patient(f, keep=icc, prefix=study.SEQUENCE_PREFIX)
    assert list(X.columns) == ["T1WI_f_a", "T2WI_f_a"] and len(X) == 6
    r1 = f[(f.reader == "1") & (f.sequence == "T1") & (f.patient_id == "P2")]
    assert X.loc["P2", "T1WI_f_a"] == pytest.approx(r1.f_a.mean())
    per = features.per_patient(f, keep=icc, how="per-roi", prefix=study.SEQUENCE_PREFIX)
    assert "T1WI_L3_f_a" in per.columns and per.shape[1] == 8


def test_model_groups():
    g = study.model_groups(["T1WI_a", "T2WI_b", "T1WI_c"])
    assert g == {"T1WI": ["T1WI_a", "T1WI_c"], "T2WI": ["T2WI_b"],
                 "T1WI+T2WI": ["T1WI_a", "T1WI_c", "T2WI_b"]}
    assert study.model_groups(["WATER_a"], {"WATER": ["WATER"], "T1WI": ["T1WI"]}) == {
        "WATER": ["WATER_a"]}


def test_fit_radscore_link_and_null_evaluate(rng):
    """The probability link is fitted on out-of-fold radscores, and the null test's evaluate
    callable reproduces, on the real labels, the test AUC the notebook reports."""
    n = 90
    X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"T1WI_f{i}" for i in range(12)])
    y = pd.Series((X.T1WI_f0 + rng.normal(size=n) > 0).astype(int))
    tr, te = X.index[:60], X.index[60:]
    model = models.RadscoreModel(cv=3, n_lambdas=10, random_state=0)
    fit = study.fit_radscore(model, X.loc[tr], y.loc[tr], cv=3, rng=5)
    oof = fit.oof
    assert list(oof.columns) == ["y_true", "score", "fold", "probability"]
    link = models.ProbabilityLink().fit(oof["score"], oof["y_true"])
    assert fit.model.link_.slope_ == pytest.approx(link.slope_)
    reported = roc_auc_score(y.loc[te], fit.model.predict_proba(X.loc[te])[:, 1])
    evaluate = study.linked_test_auc(X.loc[te], y.loc[te], cv=3, rng=5)
    assert evaluate(model, X.loc[tr], y.loc[tr]) == pytest.approx(reported, abs=1e-12)
    assert reported > 0.7


def test_new_patients_scored_by_fold_mean_when_scales_differ(rng, tmp_path):
    """Issue 18: the link is fitted on the fold models' out-of-fold radscores, so new patients
    are scored by the full-training model only when its radscore scale agrees with the fold
    models' (label-free check on training rows); otherwise by the mean of the fold models. The
    run says which, the null test evaluates the same procedure, and the saved model (the
    object that scored the test rows) survives the skops round trip with the same scores."""
    import skops.io as sio

    from vcfnb import bundle

    n = 90
    X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"T1WI_f{i}" for i in range(12)])
    y = pd.Series((X.T1WI_f0 + rng.normal(size=n) > 0).astype(int))
    tr, te = X.index[:60], X.index[60:]
    model = models.RadscoreModel(cv=3, n_lambdas=10, random_state=0)
    agree = study.fit_radscore(model, X.loc[tr], y.loc[tr], cv=3, rng=5, tol=50.0)
    assert agree.scale.test_scores.iat[0] == "full" and agree.model is agree.full
    # a tolerance no fold scale meets: the scales "differ", the fold mean scores new patients
    differ = study.fit_radscore(model, X.loc[tr], y.loc[tr], cv=3, rng=5, tol=1.0 + 1e-9)
    s = differ.scale.iloc[0]
    assert not s.scales_agree and s.policy == "auto" and s.test_scores == "fold_mean"
    assert isinstance(differ.model, models.FoldMeanRadscore)
    folds = differ.model.estimators_
    assert len(folds) == 3
    mean = np.mean([f.radscore(X.loc[te]) for f in folds], axis=0)
    np.testing.assert_allclose(differ.model.radscore(X.loc[te]), mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(differ.model.predict_proba(X.loc[te])[:, 1],
                               differ.full.link_.predict_proba(mean)[:, 1], rtol=0, atol=1e-12)
    # the fold models are those of the out-of-fold scores
    for k, f in enumerate(folds):
        rows = differ.oof.index[differ.oof.fold == k]
        np.testing.assert_allclose(f.radscore(X.loc[rows]), differ.oof.loc[rows, "score"])
    text = study.scale_sentence({"T1WI": differ, "T2WI": agree})
    assert "T1WI: **the mean of the fold models**" in text and "scales differ" in text
    assert "T2WI: **the full-training model**" in text
    forced = study.fit_radscore(model, X.loc[tr], y.loc[tr], cv=3, rng=5, test_scores="fold_mean",
                                tol=50.0)
    assert forced.scale.test_scores.iat[0] == "fold_mean" and bool(forced.scale.scales_agree.iat[0])
    assert "forced by test_scores=fold_mean" in study.scale_sentence({"m": forced})
    reported = roc_auc_score(y.loc[te], differ.model.predict_proba(X.loc[te])[:, 1])
    evaluate = study.linked_test_auc(X.loc[te], y.loc[te], cv=3, rng=5, tol=1.0 + 1e-9)
    assert evaluate(model, X.loc[tr], y.loc[tr]) == pytest.approx(reported, abs=1e-12)
    # the saved model reproduces the test scores exactly
    sio.dump(bundle._pack(differ.model), tmp_path / "m.skops")
    reloaded = bundle._load_estimator(tmp_path / "m.skops", None, ())
    assert isinstance(reloaded, models.FoldMeanRadscore)
    np.testing.assert_array_equal(reloaded.predict_proba(X.loc[te]),
                                  differ.model.predict_proba(X.loc[te]))
    with pytest.raises(ValueError, match="policy"):
        study.fit_radscore(model, X.loc[tr], y.loc[tr], cv=3, rng=5, test_scores="mean")



def test_no_label_shuffling_and_no_file_writes_in_the_study_module():
    text = MODULE.read_text(encoding="utf-8")
    for banned in ("permutation(", "shuffle", ".to_csv(", "open(", "WriteImage", "write_"):
        assert banned not in text, banned


def test_study_module_size():
    """At most 350 lines not counting docstrings (issue 16)."""
    src = MODULE.read_text(encoding="utf-8")
    doc = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body and \
                isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            doc.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    assert len(src.splitlines()) - len(doc) <= 350
