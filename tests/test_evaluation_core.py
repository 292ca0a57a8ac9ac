"""The evaluation core: predictions table → statistics → the closed metrics.json schema, and the
cohort contract's pre-flight check. Study notebooks are tested in tests/test_nb_*.py."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

import vcfnb as vc
from vcfnb import contract, metrics, models, stats
from vcfnb.report import Run

ROOT = Path(__file__).resolve().parents[1]


def _pred(rng, n=60, models_=("a", "b"), kind="probability"):
    y = np.tile([0, 1], n // 2)
    parts = []
    for k, m in enumerate(models_):
        for split in ("train_oof", "test"):
            s = 1 / (1 + np.exp(-(y * (2.0 - k) - 1 + rng.normal(size=n))))
            parts.append(pd.DataFrame({"model": m, "split": split,
                                       "patient_id": [f"{split}{i}" for i in range(n)],
                                       "y_true": y, "score": s, "score_kind": kind}))
    return pd.concat(parts, ignore_index=True)


# ---- statistics over the table ---------------------------------------------------------------
def test_evaluate_matches_the_array_functions(rng):
    pred = _pred(rng)
    out = stats.evaluate(pred, ci="delong", cutoff="youden", cutoff_split="train_oof")
    assert len(out) == 4 and set(out.ci_method) == {"delong"}
    for _, row in out.iterrows():
        part = pred[(pred.model == row.model) & (pred.split == row.split)]
        r = stats.roc_auc_ci(part.y_true, part.score)
        assert row.auc == pytest.approx(r.auc) and row.ci_low == pytest.approx(r.ci_low)
        tr = pred[(pred.model == row.model) & (pred.split == "train_oof")]
        assert row.cutoff == pytest.approx(stats.youden_cutoff(tr.y_true, tr.score))
        bm = stats.binary_metrics(part.y_true, part.score, row.cutoff)
        assert row.sensitivity == pytest.approx(bm.loc["sensitivity", "estimate"])
        assert row.ppv_count == bm.loc["ppv", "count"]


def test_evaluate_constant_scores_are_reported_not_raised():
    pred = pd.DataFrame({"model": "clinical", "split": ["train_oof"] * 6 + ["test"] * 6,
                         "patient_id": range(12), "y_true": [0, 1] * 6, "score": 0.4,
                         "score_kind": "probability"})
    out = stats.evaluate(pred)
    assert (out.auc == 0.5).all() and out.cutoff.isna().all() and out.ci_low.isna().all()
    assert out.note.str.contains("cannot separate").all()
    assert out.sensitivity.isna().all()


def test_evaluate_missing_cutoff_split_is_said(rng):
    pred = _pred(rng)
    pred = pred[pred.split == "test"]
    out = stats.evaluate(pred, cutoff_split="train_oof")
    assert out.cutoff.isna().all() and out.note.str.contains("no 'train_oof' rows").all()


def test_calibration_arguments_and_degenerate_cases(rng):
    pred = _pred(rng, n=200)
    cal = stats.calibration(pred, hl_groups=lambda n: min(10, n // 5),
                            hl_dof={"train_oof": "g-2", "test": "g"})
    test = cal[cal.split == "test"].iloc[0]
    assert test.hl_groups == 10 and test.hl_dof == 10
    assert cal[cal.split == "train_oof"].hl_dof.iloc[0] == 8
    part = pred[(pred.model == "a") & (pred.split == "test")]
    ref = stats.hosmer_lemeshow(part.y_true, part.score, groups=10, dof="g")
    assert test.hl_p == pytest.approx(ref.p_value)
    assert test.brier == pytest.approx(np.mean((part.score - part.y_true) ** 2))
    # tiny held-out set: expected counts below 1 → not computable, never a huge statistic
    small = pred[pred.split == "test"].groupby("model").head(8)
    cal_small = stats.calibration(small, hl_groups=10, hl_dof="g", reduce_groups=False)
    assert cal_small.hl_p.isna().all() and cal_small.note.str.contains("not computable").all()
    # decision scores get no calibration
    dec = _pred(rng, kind="decision")
    dec["score"] = dec["score"] * 4 - 2
    assert stats.calibration(dec).note.str.contains("not applicable").all()


def test_delong_pairs_and_decision_curve_from_the_table(rng):
    pred = _pred(rng)
    d = stats.delong_pairs(pred, split="test")
    part = pred[pred.split == "test"]
    ref = stats.delong_test(part[part.model == "a"].y_true, part[part.model == "a"].score.values,
                            part[part.model == "b"].score.values)
    assert d.p_value.iat[0] == pytest.approx(ref.p_value)
    dc = stats.decision_curve(data=pred, split="test", thresholds=[0.2, 0.5])
    assert set(dc.model) == {"a", "b", "Treat all", "Treat none"} and len(dc) == 8


def test_predictions_table_rejects_unknown_splits(rng):
    pred = _pred(rng)
    pred.loc[0, "split"] = "validation"
    with pytest.raises(ValueError, match="unknown split"):
        stats.evaluate(pred)


# ---- Run: predictions, record, permutation, schema --------------------------------------------
@pytest.fixture
def run(tmp_path):
    return Run(study="demo", params={"seed": 0}, root=tmp_path, out_dir=tmp_path / "r",
               cache_dir=tmp_path / "c")


def test_run_writes_one_predictions_table_and_valid_metrics(run, rng):
    y = pd.Series(np.tile([0, 1], 20), index=[f"P{i}" for i in range(40)])
    s = pd.Series(rng.uniform(size=40), index=y.index)
    run.predictions("m", "train_oof", score=s, y_true=y)
    run.predictions("m", "test", score=s, y_true=y, score_kind="probability")
    run.predictions("m", "test", score=s, y_true=y)  # replaces, not duplicates
    table = pd.read_csv(run.out_dir / "tables" / "predictions.csv")
    assert list(table.columns) == stats.PREDICTION_COLUMNS and len(table) == 80
    run.record(stats.evaluate(run.predictions_table), stats.calibration(run.predictions_table))
    payload = json.loads((run.out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics.validate(payload) == []
    assert set(payload["models"]["m"]) == {"train_oof", "test"}
    assert set(payload["models"]["m"]["test"]) == set(metrics.MODEL_FIELDS)
    with pytest.raises(ValueError, match="outside"):
        run.predictions("svm", "test", score=s * 5, y_true=y)
    with pytest.raises(ValueError, match="split must be"):
        run.predictions("m", "validation", score=s, y_true=y)


def test_schema_is_closed(run):
    with pytest.raises(ValueError, match="no key"):
        run.write_metrics({"permutation_p": 0.1})
    with pytest.raises(ValueError, match="unknown metric"):
        run.metric("m", "test", permutations=10)
    bad = {**metrics.empty("x"), "models": {"m": {"validation": {}}}}
    assert any("unknown split" in e for e in metrics.validate(bad))


def test_permutation_observed_auc_must_equal_the_reported_one(run):
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] + np.random.default_rng(1).normal(size=60) > 0).astype(int)
    res = models.permutation_test(models.make_classifier("LR"), X, y, cv=3, n_permutations=19,
                                  rng=0)
    with pytest.raises(ValueError, match="before its permutation test"):
        run.record_permutation("LR", res, split="cv")
    run.metric("LR", "cv", auc=res.observed_auc + 0.05, n=60)
    with pytest.raises(ValueError, match="differs from the reported"):
        run.record_permutation("LR", res, split="cv")
    run.metric("LR", "cv", auc=res.observed_auc)
    summary = run.record_permutation("LR", res, split="cv")
    payload = json.loads((run.out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert payload["permutation"]["LR"]["n_permutations"] == 19
    assert payload["permutation"]["LR"]["p_value"] == pytest.approx(res.p_value)
    assert summary.model.iat[0] == "LR"


def test_zero_permutations_are_said_not_recorded(run):
    """`n_permutations: 0` (a null-coverage run, a quick look): no test is recorded in
    metrics.json, the report says it did not run, and the null plot says so too."""
    X = np.random.default_rng(0).normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    res = models.permutation_test(models.make_classifier("LR"), X, y, cv=3, n_permutations=0,
                                  rng=0)
    run.metric("LR", "cv", auc=res.observed_auc, n=40)
    summary = run.record_permutation("LR", res, split="cv")
    payload = json.loads((run.out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert payload["permutation"] == {} and metrics.validate(payload) == []
    assert any("not run (0 permutations)" in n for n in payload["notes"])
    assert summary.n_permutations.iat[0] == 0 and np.isnan(summary.null_mean.iat[0])
    from vcfnb import plots

    ax = plots.plot_permutation_null(res.null_auc, res.observed_auc)
    assert any("no label permutations" in t.get_text() for t in ax.texts)


def test_paper_numbers_use_schema_names(run):
    run.metric("m", "test", auc=0.8)
    assert run.paper_vs_run({"m/test/auc": 0.9}).this_run.iat[0] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="<model>/<split>/<metric>"):
        run.paper_vs_run({"m/validation/auc": 0.9})


def test_stop_sets_status(run):
    with pytest.raises(vc.report.StopRun):
        run.stop("no outcome labels")
    payload = json.loads((run.out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert payload["status"] == "stopped" and payload["stopped_reason"] == "no outcome labels"


# ---- the cohort contract ----------------------------------------------------------------------
REQ = contract.Requirements(
    study="demo", sequences=("T1", "T2"), rois=("L1", "L2"),
    optional_readers={"2": "the reader ICC filter"},
    columns=(contract.Column("{outcome}", "binary", outcome=True),
             contract.Column("age", "numeric"),
             contract.Column("sex", "category", values=("M", "F")),
             contract.Column("T_score", "numeric", when="outcome_from_dxa")),
    folds=(contract.Folds("lasso_cv"), contract.Folds("inner_cv", within=("lasso_cv",))),
)


def _tables(n=20):
    ids = [f"P{i:02d}" for i in range(n)]
    cases = pd.DataFrame({"patient_id": ids, "outcome": [0, 1] * (n // 2), "age": 60.0,
                          "sex": "M"})
    rois = pd.DataFrame([{"patient_id": p, "roi": r, "sequence": s, "reader": "1"}
                         for p in ids for r in ("L1", "L2") for s in ("T1", "T2")])
    return cases, rois


def test_contract_lists_every_problem_at_once():
    cases, rois = _tables()
    params = {"outcome": "outcome", "lasso_cv": 10, "inner_cv": 7, "test_size": 0.3,
              "outcome_from_dxa": True}
    cases = cases.drop(columns=["age"]).assign(sex=["M", "X"] * 10)
    rois = rois[~((rois.roi == "L2") & (rois.patient_id == "P03"))]
    rois = rois[rois.sequence != "T2"]
    unmet = contract.check(REQ, cases, rois, params)
    text = " | ".join(unmet.problem)
    assert "'age' is missing" in text
    assert "'sex' must hold one of ['F', 'M']" in text
    assert "'T_score' is missing" in text
    assert "no ROI of sequence 'T2'" in text
    assert "lack ROI 'L2'" in text and "P03" in text
    assert "'lasso_cv' = 10" in text and "'inner_cv' = 7" in text
    lasso = unmet[unmet["where"] == "parameter lasso_cv"].fix.iat[0]
    assert lasso == "set lasso_cv: 7 or less"  # 10 per class, 3 to the stratified test split
    assert len(unmet) == 7
    # the DXA column is only required when the DXA rule is on; features-only skips the outcome
    ok = contract.check(REQ, *_tables(), {"outcome": "outcome", "lasso_cv": 5, "inner_cv": 3,
                                          "test_size": 0.3})
    assert ok.empty
    c2, r2 = _tables()
    assert contract.check(REQ, c2.drop(columns="outcome"), r2, {"lasso_cv": 5},
                          features_only=True).empty


def test_contract_honours_a_given_split_for_fold_counts():
    cases, rois = _tables(40)
    cases["split"] = ["train"] * 8 + ["test"] * 32  # 4 per class in training
    unmet = contract.check(REQ, cases, rois, {"lasso_cv": 5, "inner_cv": 2})
    assert unmet.fix.tolist()[0] == "set lasso_cv: 4 or less"


def test_requirements_round_trip_through_plain_data():
    assert contract.Requirements.from_dict(REQ.to_dict()) == REQ
    with pytest.raises(ValueError, match="unknown requirement"):
        contract.Requirements.from_dict({"study": "x", "sequence": ["T1"]})


def test_every_study_declares_requirements_and_docs_are_generated():
    for study in contract.STUDY_MODULES:
        req = contract.for_study(study)
        assert isinstance(req, contract.Requirements), study
        assert req.main_models, study
    text = (ROOT / "docs" / "cohorts.md").read_text(encoding="utf-8")
    assert contract.render_docs(text) == text, "run `python -m vcfnb.contract` to regenerate"


# ---- study modules keep only study rules -------------------------------------------------------
STUDY_FILES = sorted((ROOT / "vcfnb" / "studies").glob("*.py"))


def _code_lines(path: Path) -> int:
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    doc = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(
                body[0].value.value, str):
            doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = src.splitlines()
    return sum(1 for i, ln in enumerate(lines, 1)
               if ln.strip() and not ln.strip().startswith("#") and i not in doc)


@pytest.mark.parametrize("path", [p for p in STUDY_FILES if p.name != "__init__.py"],
                         ids=lambda p: p.name)
def test_study_module_is_small_and_shuffles_no_labels(path):
    assert _code_lines(path) <= 350, f"{path.name}: {_code_lines(path)} code lines"
    src = path.read_text(encoding="utf-8")
    for pattern in (r"\.permutation\(", r"\.shuffle\(", r"_permuted\(", r"def permutation"):
        assert not re.search(pattern, src), f"{path.name} shuffles labels itself ({pattern})"
    for pattern in (r"\bopen\(", r"\.to_csv\(", r"WriteImage\(", r"write_text\(",
                    r"\.write_bytes\("):
        assert not re.search(pattern, src), f"{path.name} does file I/O ({pattern})"


def test_one_permutation_test_is_independent_of_parallelism():
    X = np.random.default_rng(3).normal(size=(48, 4))
    y = (X[:, 0] + np.random.default_rng(4).normal(size=48) > 0).astype(int)
    one = models.permutation_test(models.make_classifier("LR"), X, y, cv=3, n_permutations=19,
                                  rng=5, n_jobs=1)
    two = models.permutation_test(models.make_classifier("LR"), X, y, cv=3, n_permutations=19,
                                  rng=5, n_jobs=2)
    np.testing.assert_array_equal(one.null_auc, two.null_auc)
    assert one.p_value == two.p_value and one.n_permutations == 19
    assert one.p_value <= 0.05 + 1e-12  # a real effect: 19 permutations can reach p = 0.05


def test_check_cohort_command_lists_every_problem(tmp_path, monkeypatch, capsys):
    from vcfnb import runner, synth

    synth.make_cohort("metastasis", tmp_path / "cohort", size="smoke", seed=0)
    cases = pd.read_csv(tmp_path / "cohort" / "cases.csv")
    req = contract.for_study("metastasis_lytic_blastic")
    dropped = [c.name for c in req.columns if not c.outcome and c.name in cases][:2]
    cases.drop(columns=dropped).to_csv(tmp_path / "cohort" / "cases.csv", index=False)
    monkeypatch.chdir(ROOT)
    rc = runner.main(["check-cohort", "--study", "metastasis_lytic_blastic", "--params", "smoke",
                      "--cohort", str(tmp_path / "cohort")])
    out = capsys.readouterr().out
    assert rc == 1 and f"{len(dropped)} unmet requirement(s)" in out
    for col in dropped:
        assert f"column {col!r} is missing" in out


# ---- CV estimates: corrected CIs, the paper's χ² ----------------------------------------------
def test_nadeau_bengio_ci_by_hand_and_wider_than_delong_on_repeated_cv(rng):
    # by hand: J = 10 fold AUCs, K = 5 → se = sqrt((1/10 + 1/4) * var)
    v = np.array([0.70, 0.80, 0.75, 0.65, 0.72, 0.78, 0.74, 0.69, 0.81, 0.71])
    r = stats.cv_corrected_ci(v, 5)
    se = np.sqrt((0.1 + 0.25) * v.var(ddof=1))
    assert r.se == pytest.approx(se)
    from scipy import stats as sps
    assert r.ci_high - r.estimate == pytest.approx(sps.t.ppf(0.975, 9) * se)
    # repeated 5-fold CV of a null model: the corrected CI is wider than DeLong's pooled one
    n, rows = 80, []
    y = np.tile([0, 1], n // 2)
    for rep in range(10):
        fold = rng.permutation(np.arange(n) % 5)
        rows.append(pd.DataFrame({"model": "m", "split": "cv", "patient_id": range(n),
                                  "y_true": y, "score": rng.normal(size=n),
                                  "score_kind": "decision", "fold": fold, "repeat": rep}))
    pred = pd.concat(rows, ignore_index=True)
    nb = stats.evaluate(pred, ci="nadeau-bengio", cutoff=None).iloc[0]
    dl = stats.evaluate(pred, ci="delong", cutoff=None).iloc[0]
    assert nb.auc == pytest.approx(dl.auc) and nb.ci_method == "nadeau-bengio"
    assert (nb.ci_high - nb.ci_low) > (dl.ci_high - dl.ci_low)
    other = pred.assign(model="m2", score=rng.normal(size=len(pred)))
    cmp_ = stats.cv_delong_pairs(pd.concat([pred, other]), split="cv")
    assert cmp_.n_folds.iat[0] == 50 and 0 <= cmp_.p_value.iat[0] <= 1


def test_pearson_chi_square_reproduces_the_metastasis_paper_table3():
    # seed 004 Table 3, soft tissue mass: 12/26 osteoblastic vs 47/52 osteolytic → χ² 18.404
    df = pd.DataFrame({"group": ["blastic"] * 26 + ["lytic"] * 52,
                       "mass": ["yes"] * 12 + ["no"] * 14 + ["yes"] * 47 + ["no"] * 5})
    pearson = stats.baseline_table(df, "group", ["mass"], categorical_test="pearson")
    assert pearson.statistic.iat[0] == pytest.approx(18.404, abs=5e-4)
    assert pearson.test.iat[0] == "Pearson chi-square"
    yates = stats.baseline_table(df, "group", ["mass"])
    assert yates.statistic.iat[0] < 18.0  # the corrected test stays available as the default


def test_recovery_check_finds_a_planted_effect_and_not_a_null_one():
    from vcfnb import recovery

    g = np.random.default_rng(7)
    names = ([f"T{i}_original_firstorder_Mean" for i in (1, 2)] + ["T2_log_firstorder_Median"]
             + [f"T2_original_glcm_f{i}" for i in range(7)])
    X = pd.DataFrame(g.normal(size=(80, 10)), columns=names)
    assert recovery.default_features(X.columns) == names[:3]
    pipe = models.make_radiomics_pipeline(["zscore", "LR"], rng=0)
    table = recovery.recovery_check(pipe, X, effects=(0.0, 1.0), n_draws=1, cv=5,
                                    n_permutations=39, rng=1)
    s = recovery.summary(table).set_index("d")
    assert s.loc[1.0, "power"] == 1.0 and s.loc[1.0, "mean_auc"] >= 0.7
    assert (table.loc[table.d == 1.0, "p_value"] < 0.05).all()
    assert s.loc[0.0, "power"] == 0.0
    with pytest.raises(ValueError, match="no feature"):
        recovery.plant_effect(X[names[3:]], 1.0)


def test_calibration_reduces_hl_groups_until_expected_counts_reach_one():
    # a discriminating, well-calibrated model on 60 held-out patients: its extreme deciles
    # expect < 1 event (or non-event), so fewer quantile groups are used and the note says so
    g = np.random.default_rng(1)
    p = special.expit(g.normal(0, 2.0, 60))
    y = (g.uniform(size=60) < p).astype(int)
    pred = pd.DataFrame({"model": "m", "split": "test", "patient_id": range(60), "y_true": y,
                         "score": p, "score_kind": "probability"})
    strict = stats.calibration(pred, hl_groups=10, hl_dof="g", reduce_groups=False).iloc[0]
    assert np.isnan(strict.hl_p) and "not computable" in strict.note
    cal = stats.calibration(pred, hl_groups=10, hl_dof="g").iloc[0]
    assert 3 <= cal.hl_groups < 10 and cal.hl_dof == cal.hl_groups
    assert f"HL with {cal.hl_groups} quantile groups instead of 10" in cal.note
    ref = stats.hosmer_lemeshow(y, p, groups=int(cal.hl_groups), dof="g")
    assert cal.hl_p == pytest.approx(ref.p_value)
    grp = stats._quantile_groups(p, int(cal.hl_groups))
    e1 = np.array([p[grp == k].sum() for k in np.unique(grp)])
    n = np.bincount(grp)[np.unique(grp)]
    assert min(e1.min(), (n - e1).min()) >= 1.0  # every expected count reaches 1
    grp11 = stats._quantile_groups(p, int(cal.hl_groups) + 1)  # one group more would not
    e1 = np.array([p[grp11 == k].sum() for k in np.unique(grp11)])
    n = np.bincount(grp11)[np.unique(grp11)]
    assert min(e1.min(), (n - e1).min()) < 1.0
    # nearly certain predictions everywhere: not computable even with 3 groups, and said so
    q = special.expit(np.r_[np.linspace(-9, -6, 30), np.linspace(6, 9, 30)])
    extreme = pred.assign(score=q, y_true=np.r_[np.zeros(30, int), np.ones(30, int)])
    row = stats.calibration(extreme, hl_groups=10, hl_dof="g").iloc[0]
    assert np.isnan(row.hl_p) and "(also with 3-10 groups)" in row.note
