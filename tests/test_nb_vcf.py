"""The vcf_benign_malignant notebook and its study rules (issues 16 and 17 for this study).

The notebook runs end to end on a no-signal simulated cohort (negative control, seed 202: the
cohort whose clinical variables carry no signal); the cheaper tests check the study contract (the
pre-flight check lists every missing column at once, per-arm fold counts name the parameter,
single-reader mode, the slice orientation read from the image direction) without extraction.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import vcfnb as vc
from vcfnb import metrics as metrics_schema
from vcfnb.studies import vcf as study

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "vcf_benign_malignant.ipynb"

TABLES = ["A_table1_baseline", "A_icc", "A_table2_performance", "A_table3_coefficients",
          "A_rfe_cv", "A_permutation", "B_table1_baseline", "B_feature_counts", "B_icc",
          "B_table3_rad_models", "B_deep_summary", "B_table4_dlr_models",
          "B_supp_table1_clinical_lr", "B_table2_clinical_models", "B_fig6_nomogram_points",
          "B_table5_models", "B_delong_test", "B_hosmer_lemeshow", "B_permutation",
          "wedge_agreement", "paper_vs_run", "provenance", "predictions",
          "permutation_A_T2WI_radiomics", "permutation_B_DLRN"]
FIGURES = ["A_fig2_lasso_path", "A_fig3_auc_vs_features", "A_fig4_coefficients", "A_fig5_roc",
           "B_fig3_gradcam", "B_fig4_dlr_lasso_cv", "B_fig5_dlr_coefficients", "B_fig6_nomogram",
           "B_fig7_roc_train", "B_fig7_roc_test", "B_delong_test", "B_calibration_test",
           "B_fig8_dca_test", "A_permutation_null", "B_permutation_null"]


def _defaults() -> dict:
    """The notebook's parameters cell evaluated (typed literals only)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, {}, ns)  # noqa: S102 - the notebook's own literals
    return ns


# --------------------------------------------------------------------------------------------
# the whole notebook: negative control, seed 202
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    import papermill as pm

    tmp = tmp_path_factory.mktemp("vcf_null")
    out = tmp / "report"
    pm.execute_notebook(
        str(NOTEBOOK), str(tmp / "executed.ipynb"), kernel_name="vcfnb", cwd=str(ROOT),
        parameters={"synthetic_signal": 0.0, "seed": 202, "out_dir": str(out),
                    "n_permutations": 19, "lasso_cv_b": 4,
                    "gradcam_cases": 1, "cache_dir": str(tmp / "cache")},
        progress_bar=False)
    return out, nbformat.read(tmp / "executed.ipynb", as_version=4)


@pytest.mark.slow
def test_notebook_null_signal(null_run):
    out, _ = null_run
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics_schema.validate(metrics) == []
    assert metrics["study"] == "vcf_benign_malignant" and metrics["simulated"] is True
    assert metrics["status"] == "ok"
    assert metrics["main_models"] == ["A_T2WI_radiomics", "B_DLRN"]
    models = metrics["models"]
    expected = {"A_T2WI_radiomics", "B_Clinical", "B_Rad", "B_DL", "B_DLR", "B_DLRN",
                "B_DLR_score", "B_Rad-ExtraTrees", "B_DLR-LR", "B_Clinical-MLP"}
    assert expected <= set(models), sorted(models)
    assert len(models) == 1 + 3 * 8 + 6
    assert set(models["A_T2WI_radiomics"]) == {"train", "train_oof", "test"}
    assert set(models["B_DLRN"]) == {"train_oof", "test"}  # no resubstitution rows
    assert set(models["B_DL"]) == set(models["B_DLR"]) == {"train", "train_oof", "test"}
    assert models["A_T2WI_radiomics"]["test"]["cutoff_split"] == "train_oof"
    assert models["B_DLRN"]["test"]["cutoff_split"] == "train_oof"
    for name in ("B_DL", "B_DLR"):
        assert models[name]["test"]["cutoff_split"] == "train_oof", name
    assert models["B_DLRN"]["test"]["hl_groups"] is not None
    # the predictions table every statistic was computed from
    pred = pd.read_csv(out / "tables" / "predictions.csv")
    assert list(pred.columns[:6]) == vc.stats.PREDICTION_COLUMNS
    assert set(pred.split) == {"train", "train_oof", "test"}
    for name, splits in models.items():
        for split, m in splits.items():
            rows = pred[(pred.model == name) & (pred.split == split)]
            assert m["n"] == len(rows) > 0, (name, split)
    # the permutation tests: one per headline model, observed = reported, null centred at 0.5
    assert set(metrics["permutation"]) == {"A_T2WI_radiomics", "B_DLRN"}
    for name, perm in metrics["permutation"].items():
        assert perm["split"] == "test" and perm["n_permutations"] >= 19
        assert perm["observed_auc"] == pytest.approx(models[name]["test"]["auc"], abs=1e-6)
        assert perm["p_value"] > 0.01, (name, perm)
        assert abs(perm["null_mean"] - 0.5) < 0.12, (name, perm)
    for t in TABLES:
        assert (out / "tables" / f"{t}.csv").is_file(), t
    for f in FIGURES:
        assert (out / "figures" / f"{f}.png").is_file(), f


@pytest.mark.slow
def test_dl_chain_scores_are_out_of_fold_and_feed_the_dlrn(null_run):
    """Honest numbers: the DL, DLR and DLRN training predictions are out of fold (`train_oof`)
    with the folds of the per-fold networks, and the second-level DLRN is fitted on the recorded
    out-of-fold DLR scores (here with no clinical predictor: the DLR score alone)."""
    from sklearn.linear_model import LogisticRegression

    out, _ = null_run
    pred = pd.read_csv(out / "tables" / "predictions.csv", dtype={"patient_id": str})
    oof = {m: g.set_index("patient_id").sort_index()
           for m, g in pred[pred.split == "train_oof"].groupby("model")}
    test = {m: g.set_index("patient_id").sort_index()
            for m, g in pred[pred.split == "test"].groupby("model")}
    for name in ("B_DL", "B_DLR", "B_DLR_score", "B_DLRN", "B_DLR-LR"):
        assert name in oof and oof[name].fold.between(0, 2).all(), name
        # one fold assignment: the networks' (a DLR fold without its network would be leaky)
        pd.testing.assert_series_equal(oof[name].fold, oof["B_DL"].fold, check_names=False)
    assert not ((pred.model == "B_DLRN") & (pred.split == "train")).any()
    # the DL model's out-of-fold scores are not its resubstitution scores
    resub = pred[(pred.model == "B_DL") & (pred.split == "train")].set_index("patient_id")
    assert not np.allclose(resub.score.sort_index(), oof["B_DL"].score)
    # the DLRN = logistic regression on the out-of-fold DLR scores, applied to the test scores
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert any("no predictor was independent" in n for n in metrics["notes"])
    tr = oof["B_DLR_score"]
    m = LogisticRegression(C=np.inf, max_iter=10000).fit(tr[["score"]], tr.y_true)
    te = test["B_DLR_score"]
    np.testing.assert_allclose(m.predict_proba(te[["score"]])[:, 1],
                               test["B_DLRN"].loc[te.index, "score"], rtol=1e-6, atol=1e-9)
    scale = pd.read_csv(out / "tables" / "B_dlrn_score_scale.csv")
    assert scale.test_scores.iat[0] in ("full", "fold_mean") and scale.policy.iat[0] == "auto"
    assert any("testing patients scored by" in n for n in metrics["notes"])
    assert any("conditional on the DL features" in n and "not refitted per permutation" in n
               for n in metrics["notes"])


@pytest.mark.slow
def test_no_signal_clinical_model_reported_not_crashed(null_run):
    """Defect 13: seed 202 without signal keeps no clinical predictor; the clinical models'
    scores are constant and are reported with AUC 0.5 and no cut-off instead of ending the run."""
    out, _ = null_run
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert any("no predictor was independent" in n for n in metrics["notes"])
    for name in ("B_Clinical", "B_Clinical-LR", "B_Clinical-ExtraTrees"):
        for split in ("train", "test"):
            m = metrics["models"][name][split]
            assert m["auc"] == pytest.approx(0.5) and m["cutoff"] is None, (name, split, m)


@pytest.mark.slow
def test_report_text_describes_the_run(null_run):
    """Defect 10: split sizes, the λ rule and the slices in the report come from the run."""
    out, nb = null_run
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells
                     if c.cell_type == "code" for o in c.outputs)
    pred = pd.read_csv(out / "tables" / "predictions.csv")
    n_train = {m: int(((pred.model == m) & (pred.split == "train")).sum())
               for m in ("A_T2WI_radiomics", "B_DL")}
    assert f"Arm A: **{n_train['A_T2WI_radiomics']} training**" in text
    assert f"Arm B: **{n_train['B_DL']} training**" in text
    assert "λ chosen by 4-fold CV" in text and "λ chosen by 10-fold" not in text
    # lasso_solver_b cd (the default): where the arm B LASSO stops, from the fitted selector
    assert "solved to convergence by glmnet's coordinate descent (absolute tolerance 1e-10" in text
    assert "the slices ±5 away" in text and "array axis 0" in text
    assert "whole-image intensity normalisation: on" in text
    assert "Arm A reader agreement:" in text
    by_class = pd.read_csv(out / "tables" / "B_calibration_by_class.csv").query("model == 'B_DLRN'")
    assert len(by_class) == 2 and (by_class.split == "test").all()
    assert "B_DLRN, testing: mean predicted probability" in text


def test_notebook_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "vcfnb"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
            assert not re.search(r"^\s*(def|class) ", cell.source, re.M)


# --------------------------------------------------------------------------------------------
# the study contract, without extraction
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_cohort(tmp_path_factory) -> Path:
    return vc.synth.make_cohort("vcf", tmp_path_factory.mktemp("vcf_smoke"), size="smoke",
                                seed=0)


def _copy(src: Path, dst: Path, *, cases=None, rois=None) -> Path:
    shutil.copytree(src, dst)
    for name, edit in (("cases.csv", cases), ("rois.csv", rois)):
        if edit is not None:
            t = edit(pd.read_csv(dst / name, dtype=str))
            t.to_csv(dst / name, index=False)
    return dst


def _start(folder: Path, tmp_path: Path, **params):
    ns = {**_defaults(), "cohort_dir": str(folder), "out_dir": str(tmp_path / "report"),
          "cache_dir": str(tmp_path / "cache"), **params}
    return vc.report.start_run("vcf_benign_malignant", ns)


def test_preflight_lists_every_missing_column_at_once(smoke_cohort, tmp_path):
    """Defect 5: a cohort lacking several clinical columns is refused by start_run with one
    message naming all of them, before anything is extracted."""
    gone = ["location", "band_edema", "posterior_involvement", "age"]
    folder = _copy(smoke_cohort, tmp_path / "cohort", cases=lambda t: t.drop(columns=gone)
                   .assign(sex=lambda d: d.sex.replace({"M": "male"})))
    with pytest.raises(vc.contract.CohortRequirementsError) as err:
        _start(folder, tmp_path)
    msg = str(err.value)
    for col in gone:
        assert f"column '{col}' is missing" in msg, col
    assert "column 'sex' must hold one of ['F', 'M']" in msg
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))
    unmet = pd.read_csv(tmp_path / "report" / "tables" / "requirements_unmet.csv")
    assert len(unmet) == len(gone) + 1


def test_fold_counts_are_checked_per_arm(smoke_cohort, tmp_path):
    """Defect 8: arm B's LASSO folds inside the stacking folds exceed what arm B's smaller class
    allows: refused naming the parameter and the largest value that works."""
    run = _start(smoke_cohort, tmp_path, lasso_cv_b=10, stack_cv_b=5)  # whole cohort: fine
    with pytest.raises(vc.contract.CohortRequirementsError) as err:
        study.check_arms(run)
    msg = str(err.value)
    assert "arm B: parameter 'lasso_cv_b' = 10" in msg and "set lasso_cv_b: 8 or less" in msg
    assert "arm A" not in msg
    run = _start(smoke_cohort, tmp_path, lasso_cv_b=8, stack_cv_b=5)
    assert study.check_arms(run).empty


def test_single_reader_mode(smoke_cohort, tmp_path):
    """Defect 4: without reader-2 ROIs the run starts, notes single-reader mode, and the ICC
    filter is skipped keeping every feature."""
    folder = _copy(smoke_cohort, tmp_path / "cohort", rois=lambda t: t[t.reader != "2"])
    run = _start(folder, tmp_path)
    assert not run.has_reader("2")
    assert any("single-reader mode" in n for n in run.notes)
    feats = pd.DataFrame({"patient_id": ["a", "b", "c"], "reader": "1", "f_x_1": [1.0, 2, 3],
                          "f_x_2": [3.0, 1, 2]})
    table, kept, note = study.reader_icc(feats, threshold=0.75)
    assert kept == ["f_x_1", "f_x_2"] and table.empty and "single-reader mode" in note


def _image(path: Path, direction) -> str:
    img = sitk.Image([8, 9, 10], sitk.sitkInt16)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return str(path)


def test_slice_axis_follows_the_image_direction(smoke_cohort, tmp_path):
    """Defect 11: the sagittal slice axis of the 2.5D step is read from the direction cosines:
    axis 0 for the built-in sagittal scans, axis 2 for the same anatomy stored axially, and an
    oblique scan is refused naming its file."""
    rois = vc.io.load_cohort(smoke_cohort).rois
    assert study.slice_axis(rois) == 0
    axial = _image(tmp_path / "axial.nii.gz", (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert study.slice_axis(pd.DataFrame({"image": [axial]})) == 2
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    oblique = _image(tmp_path / "oblique.nii.gz", (c, -s, 0, s, c, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="oblique.nii.gz"):
        study.slice_axis(pd.DataFrame({"image": [oblique]}))
    with pytest.raises(ValueError, match="different array axes"):
        study.slice_axis(pd.DataFrame({"image": [axial, rois.image.iloc[0]]}))
    by_slice = {"setting": {"force2D": True, "force2Ddimension": 0}, "imageType": {"Original": {}}}
    assert study.follow_axis(by_slice, 2)["setting"]["force2Ddimension"] == 2
    assert study.follow_axis(study.settings_a(), 2) == study.settings_a()


def test_constant_clinical_model_is_evaluated_not_raised():
    """Defect 13 at unit level: no clinical predictor → constant scores → AUC 0.5, no cut-off."""
    ids = [f"p{i}" for i in range(20)]
    y = pd.Series([0, 1] * 10, index=ids)
    sp = pd.Series(["train"] * 14 + ["test"] * 6, index=ids)
    sc = vc.models.classifier_scores(pd.DataFrame(index=ids), y, sp == "train",
                                     names=["LR", "ExtraTrees"])
    assert sc.nunique().eq(1).all()
    pred = pd.concat([pd.DataFrame({"model": "c", "split": s, "patient_id": sp.index[sp == s],
                                    "y_true": y[sp == s], "score": sc.LR[sp == s],
                                    "score_kind": "probability"}) for s in ("train", "test")])
    perf = vc.stats.evaluate(pred, ci="delong", cutoff="youden", cutoff_split="train")
    assert np.allclose(perf.auc, 0.5) and perf.cutoff.isna().all()


def test_study_module_holds_only_study_rules():
    src = (ROOT / "vcfnb" / "studies" / "vcf.py").read_text(encoding="utf-8")
    tree = ast.parse(src)
    doc = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            b = node.body[0]
            if isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) \
                    and isinstance(b.value.value, str):
                doc.update(range(b.lineno, b.end_lineno + 1))
    lines = [ln for i, ln in enumerate(src.splitlines(), 1)
             if i not in doc and ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) <= 350, len(lines)
    code = "\n".join(lines)
    for bad in ("open(", ".to_csv(", "WriteImage", "write_text", ".permutation(", "shuffle(",
                "Parallel(", "default_rng("):
        assert bad not in code, bad


def test_a_given_split_is_honoured():
    """Issue 17: the split a cohort gives is the split used (no re-draw); other values refused."""
    cases = pd.DataFrame({"patient_id": [f"p{i}" for i in range(10)], "outcome": [0, 1] * 5,
                          "split": ["test"] * 3 + ["train"] * 7})
    s = study.split(cases, test_size=0.5, rng=1)
    assert s.tolist() == cases.split.tolist() and s.index.tolist() == cases.patient_id.tolist()
    drawn = study.split(cases.drop(columns="split"), test_size=0.3, rng=1)
    assert (drawn == "test").sum() == 3
    with pytest.raises(ValueError, match="external"):
        study.split(cases.assign(split=["external"] + ["train"] * 9))


# --------------------------------------------------------------------------------------------
# arm A: oversampling inside every inner fold; morphometry along the body's own axis
# --------------------------------------------------------------------------------------------
def _rows(A) -> set:
    return {r.tobytes() for r in np.ascontiguousarray(np.asarray(A, dtype=float))}


def _inner_fold_overlaps(pipe, X, y, monkeypatch) -> list[str]:
    """Fit ``pipe`` and list every inner validation fold (LASSO's CV, RFE's CV) holding a row
    that is also among the rows fitted on in that fold (a copy made by oversampling)."""
    from sklearn.svm import SVC

    from vcfnb import selection

    seen, found = {}, []
    fold_scores, svc_fit, svc_dec = (selection.LassoSelector._fold_scores, SVC.fit,
                                     SVC.decision_function)

    def lasso_fold(self, Xf, yf, train, test, lambdas):
        if _rows(Xf[test]) & _rows(Xf[train]):
            found.append("LASSO inner fold")
        return fold_scores(self, Xf, yf, train, test, lambdas)

    def fit(self, Xf, yf, *a, **k):
        seen[id(self)] = _rows(Xf)
        return svc_fit(self, Xf, yf, *a, **k)

    def decision_function(self, Xf):
        if _rows(Xf) & seen.get(id(self), set()):
            found.append("RFE inner fold")
        return svc_dec(self, Xf)

    with monkeypatch.context() as m:
        m.setattr(selection.LassoSelector, "_fold_scores", lasso_fold)
        m.setattr(SVC, "fit", fit)
        m.setattr(SVC, "decision_function", decision_function)
        pipe.fit(X, y)
    return sorted(set(found))


def test_arm_a_oversamples_inside_every_inner_fold(monkeypatch):
    """Arm A oversamples the minority class inside each inner fit: no LASSO or RFE validation
    fold holds a copy of a row it was fitted on (oversampling before LASSO-CV/RFECV, the old
    chain, does), and the final SVM is still fitted on balanced (oversampled) rows."""
    g = np.random.default_rng(3)
    y = pd.Series(np.r_[np.ones(15, int), np.zeros(45, int)], index=[f"p{i}" for i in range(60)])
    X = pd.DataFrame(g.normal(size=(60, 12)), index=y.index).add_prefix("f")
    X["f0"] += 1.2 * y
    X["f1"] -= 0.8 * y
    old = vc.models.make_radiomics_pipeline([
        "oversample", "zscore", ("correlation", {"threshold": 0.99}),
        ("lasso", {"cv": 5, "min_features": 2}), ("rfe", {"cv": 5}),
        vc.models.make_classifier("LR")], rng=0)
    assert _inner_fold_overlaps(old, X, y, monkeypatch) == ["LASSO inner fold",
                                                            "RFE inner fold"]
    pipe = study.arm_a_pipeline(rng=0)
    assert _inner_fold_overlaps(pipe, X, y, monkeypatch) == []
    assert pipe[-1].shape_fit_[0] == 2 * 45  # the final SVM: minority oversampled to 45
    assert pipe["rfe"].rfecv_.estimator_[-1].shape_fit_[0] == 90
    out = study.arm_a_outputs(pipe)
    assert {"f0", "f1"} & set(out["coefficients"].feature)
    again = study.arm_a_pipeline(rng=0).fit(X, y)  # deterministic
    assert np.array_equal(again.decision_function(X), pipe.decision_function(X))


def _tilted_body(path: Path, tilt_deg: float, height: float = 20.0) -> str:
    """A box-shaped body 20 mm high, 34 mm deep, tilted by ``tilt_deg`` in the sagittal plane
    (LPS grid, 1 mm voxels); returns the mask file."""
    z, yy, x = np.indices((50, 50, 50)).astype(float) - 24.5
    t = np.deg2rad(tilt_deg)
    ant, sup = -yy, z
    a, s = np.cos(t) * ant - np.sin(t) * sup, np.sin(t) * ant + np.cos(t) * sup
    inside = (np.abs(x) <= 15) & (np.abs(a) <= 17) & (np.abs(s) <= height / 2)
    img = sitk.GetImageFromArray(inside.astype(np.uint8))
    img.SetOrigin((-24.5, -24.5, -24.5))
    sitk.WriteImage(img, str(path))
    return str(path)


def test_vcf_morphometry_measures_along_the_bodys_own_axis(tmp_path):
    """A single fractured body tilted 20° in the scanner: the vcf default (the body's own
    principal axis) measures its 20 mm height; the image's vertical axis inflates it."""
    rois = pd.DataFrame({"patient_id": ["p0"], "reader": ["1"], "label": [1],
                         "mask": [_tilted_body(tmp_path / "m.nii.gz", 20.0)]})
    own = study.morphometric_wedge(rois)
    vertical = study.morphometric_wedge(rois, height_axis=None)
    for k in ("anterior_mm", "middle_mm", "posterior_mm"):
        assert own[k].iloc[0] == pytest.approx(20.0, abs=1.0), own
    assert vertical["middle_mm"].iloc[0] > own["middle_mm"].iloc[0] + 0.6
    assert own["wedge_morphometry"].iloc[0] == 0


@pytest.mark.slow
def test_saved_models_reproduce_the_recorded_test_scores(null_run):
    """Issue 20: the run saves arm A's radiomics model and arm B's Rad model (features → score);
    `vcfnb.bundle.verify` rebuilds their inputs from the cohort (N4 and extraction as in the
    run) and reproduces every recorded test score exactly; the CNN-based models are not saved
    and the report says so."""
    out, _ = null_run
    saved = {json.loads(f.read_text(encoding="utf-8"))["model"]
             for f in vc.bundle.saved_models(out)}
    assert saved == {"A_T2WI_radiomics", "B_Rad"}
    cohort = vc.sources.data_root() / "cohorts" / "vcf-smoke-seed202-signal0"
    check = vc.bundle.verify(out, cohort, cache_dir=out.parent / "cache")
    pred = pd.read_csv(out / "tables" / "predictions.csv")
    for row in check.itertuples():
        assert row.split == "test" and row.reproduced, check
        assert row.n == ((pred.model == row.model) & (pred.split == "test")).sum()
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert any("B_DLRN are not saved" in n for n in metrics["notes"])
    for f in ("flow_diagram", "case_montage", "A_feature_contributions",
              "B_fig4b_dlr_feature_importance", "B_supp_fig2_rad_roc_train_oof",
              "B_calibration_train_oof", "B_delong_train_oof"):
        assert (out / "figures" / f"{f}.png").is_file(), f


def test_run_card_links_the_figures(tmp_path):
    """Issue 20: the run card on top of the report links every saved figure."""
    (tmp_path / "figures").mkdir()
    for name in ("flow_diagram", "case_montage"):
        (tmp_path / "figures" / f"{name}.png").write_bytes(b"")
    text = vc.report.run_card_markdown(tmp_path)
    assert "## Figures" in text
    assert "- [case_montage](figures/case_montage.png)" in text
    assert "- [flow_diagram](figures/flow_diagram.png)" in text


# --------------------------------------------------------------------------------------------
# the out-of-fold DLR/DLRN chain on a synthetic per-fold feature bank (no network needed)
# --------------------------------------------------------------------------------------------
def _fake_bank(seed=0, n=60, k=3):
    from vcfnb import deep

    g = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(n)]
    y = pd.Series(np.arange(n) % 2, index=ids)
    split_ = pd.Series(np.where(np.arange(n) < 45, "train", "test"), index=ids)
    train = [i for i in ids if split_[i] == "train"]
    fold = pd.Series([j % k for j in range(len(train))], index=pd.Index(train, name="patient_id"))

    def feats(noise):  # one network's DL features: signal plus network-specific noise
        return pd.DataFrame({"DL_0": y + noise * g.normal(size=n), "DL_1": g.normal(size=n)},
                            index=pd.Index(ids, name="patient_id"))

    per_fold = [feats(1.0) for _ in range(k)]
    bank = deep.DeepOOF(None, feats(1.0), y * 0.0 + 0.5, fold, per_fold,
                        [y * 0.0 + 0.5] * k, [list(fold.index[fold != j]) for j in range(k)])
    cases = pd.DataFrame({"patient_id": ids, "age": g.normal(60, 10, n).round(),
                          "sex": g.choice(["M", "F"], n), "location": g.choice(study.LOCATIONS, n),
                          **{c: g.integers(0, 2, n) for c in study.SEMANTIC}})
    X_rad = pd.DataFrame({"rad_a": y + g.normal(size=n), "rad_b": g.normal(size=n)}, index=ids)
    return bank, cases, X_rad, y, split_


def test_dlrn_chain_is_fitted_on_out_of_fold_dlr_scores():
    """Issue "honest numbers": each training patient's DLR score comes from its fold network's
    features and a selection chain fitted without its fold; the nomogram is fitted on those
    scores; the testing patients' score is the full chain's or the fold mean's as chosen."""
    from sklearn.linear_model import LogisticRegression

    bank, cases, X_rad, y, split_ = _fake_bank()
    sel_kw = dict(alpha=0.5, corr_threshold=0.9, lasso_cv=3, rng=0)
    kw = dict(selection=sel_kw, enter_p=0.05, keep_p=0.05)
    out = study.dlrn_chain(X_rad, bank, cases, y, split_, classifiers=["LR"], **kw)
    for k in range(3):
        held = bank.fold.index[bank.fold == k]
        X_k = study.fuse(X_rad, bank.fold_features[k])
        fit_ids = bank.fold_train_ids[k]
        sel = study.selection_b(**sel_kw).fit(X_k.loc[fit_ids], y[fit_ids])
        np.testing.assert_allclose(out["dlr_score"][held], vc.models.radscore(sel, X_k.loc[held]))
        assert set(held).isdisjoint(fit_ids)
    train, test = split_.index[split_ == "train"], split_.index[split_ == "test"]
    X = out["design"]
    ref = LogisticRegression(C=np.inf, max_iter=10000).fit(X.loc[train], y[train])
    np.testing.assert_allclose(out["model"].coef_, ref.coef_, rtol=1e-6)
    assert out["oof"].score.between(0, 1).all() and out["oof"].index.equals(bank.fold.index)
    assert out["dlr_oof"].LR.notna().all() and out["dlr_oof"].fold.equals(bank.fold)
    used = out["scale"].test_scores.iat[0]
    np.testing.assert_allclose(out["dlr_score"][test], out["dlr"]["DLR_score"].loc[test, used])
    for policy in ("full", "fold_mean"):
        forced = study.dlrn_chain(X_rad, bank, cases, y, split_, test_scores=policy, oof=False,
                                  **kw)
        np.testing.assert_allclose(forced["dlr_score"][test],
                                   out["dlr"]["DLR_score"].loc[test, policy])
        np.testing.assert_allclose(forced["dlr_score"][train], out["dlr_score"][train])
    # the permutation evaluator on the real labels reproduces the DLRN's test AUC
    from sklearn.metrics import roc_auc_score

    evaluate = study.dlrn_test_auc(X_rad, bank, cases, y, split_, **kw)
    auc = evaluate(study.selection_b(**sel_kw), None, y[train].to_numpy())
    assert auc == pytest.approx(roc_auc_score(y[test], out["score"][test]))


def test_test_scores_follow_the_scale_check():
    """A full-training chain whose training-row scores are 3× wider than the fold chains' is not
    used for testing patients under `auto` (fold mean instead); a matching one is."""
    g = np.random.default_rng(1)
    base = g.normal(size=30)
    fold = np.r_[np.arange(24) % 3, [-1] * 6]
    folds = {f"fold_{k}": base + 0.05 * g.normal(size=30) for k in range(3)}
    frame = pd.DataFrame({"oof": np.where(fold >= 0, base, np.nan), "full": 3 * base,
                          "fold_mean": np.mean(list(folds.values()), axis=0), "fold": fold,
                          **folds})
    s, t = vc.models.choose_test_scores(frame)
    assert t.test_scores.iat[0] == "fold_mean" and not t.scales_agree.iat[0]
    assert t.sd_ratio.iat[0] == pytest.approx(3, rel=0.1)
    np.testing.assert_allclose(s[fold < 0], frame.fold_mean[fold < 0])
    np.testing.assert_allclose(s[fold >= 0], base[fold >= 0])
    s, t = vc.models.choose_test_scores(frame, "full")
    assert t.test_scores.iat[0] == "full" and not t.scales_agree.iat[0]
    s, t = vc.models.choose_test_scores(frame.assign(full=base + 0.05 * g.normal(size=30)))
    assert t.test_scores.iat[0] == "full" and t.scales_agree.iat[0]
    with pytest.raises(ValueError, match="policy"):
        vc.models.choose_test_scores(frame, "mean")
    # the tolerance decides: 3x wider scales agree at tol 3.5; tol <= 1 could never agree
    s, t = vc.models.choose_test_scores(frame, tol=3.5)
    assert t.test_scores.iat[0] == "full" and t.tol.iat[0] == 3.5
    with pytest.raises(ValueError, match="tol must be"):
        vc.models.choose_test_scores(frame, tol=1.0)


def test_dlrn_scale_tol_is_a_notebook_parameter_used_by_the_scale_check():
    """The DLRN scale-check tolerance is the `dlrn_scale_tol` parameter (default 1.25), passed
    to the DLRN chain (and so to `choose_test_scores`), not a number hard-coded in a cell."""
    from vcfnb.runner import notebook_parameters

    nb_path = ROOT / "notebooks" / "vcf_benign_malignant.ipynb"
    declared = notebook_parameters(nb_path)
    assert declared["dlrn_scale_tol"] == ("float", "1.25")
    nb = nbformat.read(str(nb_path), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"
            and "parameters" not in c.metadata.get("tags", [])]
    assert not any("tol=1.25" in src for src in code)
    assert any("tol=dlrn_scale_tol" in src and "test_scores=dlrn_test_scores" in src
               for src in code)
