"""The osteoporosis_mri notebook end to end.

1. A signal=0 simulated cohort (negative control): metrics.json validates, every model writes
   its predictions, and the whole-pipeline permutation null (19 permutations) sits at chance.
2. A fixture cohort built here from the real lumbar MRI in ../shared/data (VB3: one reader, a
   GIVEN split, no external cohort, invented DXA columns): the split is honoured, the cohort
   folder is byte-identical afterwards, the single-reader and no-external steps say so; a copy
   with planted faults is refused listing every fault, before anything is extracted.
3. The saved models (``models/``) reproduce the recorded validation scores from the cohort
   (:func:`vcfnb.bundle.verify`), and the external scores of the headline tables are those of the
   features as extracted (ComBat only in the sensitivity table).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from vcfnb import bundle, modelcard, runner, sources
from vcfnb import metrics as schema
from vcfnb.stats import PREDICTION_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "osteoporosis_mri.ipynb"
MODELS = {"T1WI", "T2WI", "T1WI+T2WI"}


def _execute(out: Path, **parameters):
    import papermill as pm

    out.mkdir(parents=True, exist_ok=True)
    return pm.execute_notebook(
        str(NOTEBOOK), str(out / "executed.ipynb"), kernel_name="vcfnb",
        cwd=str(NOTEBOOK.parent), progress_bar=False,
        parameters={"out_dir": str(out / "report"), "cache_dir": str(out / "cache"), **parameters})


def _markdown_outputs(executed: Path) -> str:
    nb = nbformat.read(str(executed), 4)
    return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells
                     if c.cell_type == "code" for o in c.outputs)


def _stderr(executed: Path) -> str:
    nb = nbformat.read(str(executed), 4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.get("name") == "stderr")


# ------------------------------------------------------------------------------------------
# 1. negative control on the built-in simulated cohort
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("op_null")
    # test_scores=fold_mean: validation/external patients scored by the mean of the fold models
    # (the saved models, the null test and predict must all follow; issue 18)
    _execute(out, synthetic_signal=0.0, seed=11, n_permutations=19, reliability_patients=6,
             feature_classes=["shape", "firstorder", "glcm", "glszm"], cv_folds=3, lasso_cv=3,
             test_scores="fold_mean")
    return out / "report"


@pytest.mark.slow
def test_metrics_json_validates(null_run):
    metrics = json.loads((null_run / "metrics.json").read_text(encoding="utf-8"))
    assert schema.validate(metrics) == []
    assert metrics["study"] == "osteoporosis_mri" and metrics["simulated"] is True
    assert metrics["status"] == "ok" and metrics["main_models"] == ["T1WI+T2WI"]
    assert set(metrics["models"]) == MODELS
    for name, splits in metrics["models"].items():
        assert {"train", "train_oof", "test", "external"} <= set(splits), name
        assert splits["test"]["ci_method"] == "delong"
        assert splits["test"]["cutoff_split"] == "train_oof"
        assert splits["train_oof"]["cutoff"] == splits["test"]["cutoff"]  # one cut-off, applied


@pytest.mark.slow
def test_predictions_table(null_run):
    pred = pd.read_csv(null_run / "tables" / "predictions.csv")
    assert PREDICTION_COLUMNS == list(pred.columns[:len(PREDICTION_COLUMNS)])
    assert set(pred.model) == MODELS
    assert set(pred.split) == {"train", "train_oof", "test", "external"}
    assert set(pred.score_kind) == {"probability"}
    # every model scores the same patients on each split; train_oof = train patients
    for split, g in pred.groupby("split"):
        ids = [frozenset(d.patient_id) for _, d in g.groupby("model")]
        assert len(set(ids)) == 1, split
    tr = set(pred.loc[pred.split == "train", "patient_id"])
    assert tr == set(pred.loc[pred.split == "train_oof", "patient_id"])
    assert not tr & set(pred.loc[pred.split == "test", "patient_id"])
    # the AUC in metrics.json is the AUC of these rows
    from sklearn.metrics import roc_auc_score

    metrics = json.loads((null_run / "metrics.json").read_text(encoding="utf-8"))
    g = pred[(pred.model == "T1WI+T2WI") & (pred.split == "test")]
    assert metrics["models"]["T1WI+T2WI"]["test"]["auc"] == pytest.approx(
        roc_auc_score(g.y_true, g.score), abs=1e-6)


@pytest.mark.slow
def test_signal_zero_permutation_null(null_run):
    metrics = json.loads((null_run / "metrics.json").read_text(encoding="utf-8"))
    perm = metrics["permutation"]["T1WI+T2WI"]
    assert perm["split"] == "test" and perm["n_permutations"] == 19
    # the observed AUC of the permutation test is the AUC the report states
    assert perm["observed_auc"] == pytest.approx(
        metrics["models"]["T1WI+T2WI"]["test"]["auc"], abs=1e-6)
    assert perm["p_value"] > 0.01  # with 19 permutations p can reach 0.05: this can fail
    null = pd.read_csv(null_run / "tables" / "permutation_T1WI_T2WI.csv")["null_auc"]
    assert len(null) == 19 and abs(null.mean() - 0.5) < 0.15


@pytest.mark.slow
def test_report_files(null_run):
    tables = {p.stem for p in (null_run / "tables").glob("*.csv")}
    for name in ("dxa_rule", "icc", "icc_summary", "table1_baseline", "table4_external_baseline",
                 "table2_training", "table3_validation", "table5_external", "delong",
                 "hosmer_lemeshow", "external_harmonisation", "harmonisation_shift",
                 "table5_external_combat_sensitivity", "feature_contributions", "saved_models",
                 "case_montage", "permutation_T1WI_T2WI", "paper_vs_run", "provenance",
                 "radscore_models", "predictions"):
        assert name in tables, name
    figures = {p.stem for p in (null_run / "figures").glob("*.png")}
    for name in ("fig2_coefficients", "fig3_correlation_heatmap", "fig4_clustered_heatmap",
                 "fig5_radscore_train", "fig7_decision_curve", "fig8_calibration",
                 "fig9_external_roc", "permutation_null", "flow_diagram", "case_montage",
                 "feature_contributions"):
        assert name in figures, name
    assert not (null_run / "tables" / "recovery_check.csv").exists()  # off by default
    icc = pd.read_csv(null_run / "tables" / "icc.csv")
    assert {"sequence", "feature", "icc", "kept"} <= set(icc.columns)
    for name in ("boxsigmaimage_glcm_Correlation",
                 "additivegaussiannoise_glszm_LowGrayLevelZoneEmphasis",
                 "log-sigma-4-0-mm-3D_firstorder_Median"):
        assert name in set(icc.feature), name  # the paper's named features are expressible
    hl = pd.read_csv(null_run / "tables" / "hosmer_lemeshow.csv")
    assert {"hl_groups", "hl_dof", "note"} <= set(hl.columns)
    vs = pd.read_csv(null_run / "tables" / "paper_vs_run.csv")
    assert "T1WI+T2WI/test/auc" in set(vs.quantity)


@pytest.mark.slow
def test_report_text_describes_the_run(null_run):
    """Defect 10: narrative numbers come from the run (split sizes, λ rule, normalisation)."""
    text = _markdown_outputs(null_run.parent / "executed.ipynb")
    counts = pd.read_csv(null_run / "tables" / "split_counts.csv").set_index("split")
    assert f"train {counts.loc['train', 'total']}" in text
    assert "drawn: stratified 70% / 30%" in text
    assert "chosen by 3-fold CV (deviance, 1se rule)" in text  # lasso_cv=3 was set
    assert "from 3 folds" in text
    # the LASSO's stopping rule is stated (glmnet's default criterion, lasso_thresh 1e-7)
    assert "glmnet's convergence criterion: thresh 1e-07 × the null deviance per patient" in text
    assert "Intensity normalisation is on" in text
    assert "labelled 56 of 56 patients" in text  # the DXA rule says what it did
    # issue 18: which chain scored the new patients, per model, in the table and the text
    models = pd.read_csv(null_run / "tables" / "radscore_models.csv").set_index("model")
    assert set(models.test_scores) == {"fold_mean"} and set(models.index) == MODELS
    assert "T1WI+T2WI: **the mean of the fold models**" in text
    assert "forced by test_scores=fold_mean" in text
    meta = json.loads((null_run / "models" / "T1WI_T2WI.json").read_text(encoding="utf-8"))
    assert meta["estimator"] == "vcfnb.models.FoldMeanRadscore"
    # where the validation calibration departs, by class, from this run's own predictions
    by_class = pd.read_csv(null_run / "tables" / "calibration_by_class.csv")
    pred = pd.read_csv(null_run / "tables" / "predictions.csv")
    one = by_class[(by_class.model == "T1WI+T2WI") & (by_class.split == "test")
                   & (by_class.y_true == 0)].iloc[0]
    test0 = pred[(pred.model == "T1WI+T2WI") & (pred.split == "test") & (pred.y_true == 0)]
    assert one.n == len(test0) and one.mean_probability == pytest.approx(test0.score.mean())
    assert (f"T1WI+T2WI, validation: mean predicted probability {one.mean_probability:.2f} for "
            f"the {len(test0)} patients with normal bone mass") in text


def test_defaults_headline_unharmonised_and_permutations_auto():
    """The paper harmonised nothing: ComBat is off by default and in every params file; the
    permutations resolve from "auto" (99 on paper-sized or user cohorts)."""
    import yaml

    params = runner.notebook_parameters(NOTEBOOK)
    assert params["harmonisation"][1].strip("'\"") == "none"
    assert params["n_permutations"][1].strip("'\"") == "auto"
    assert params["recovery"][1] == "False"
    for f in (ROOT / "params" / "osteoporosis_mri").glob("*.yaml"):
        assert yaml.safe_load(f.read_text(encoding="utf-8")).get("harmonisation", "none") == \
            "none", f.name
    paper = yaml.safe_load((ROOT / "params" / "osteoporosis_mri" / "paper.yaml").read_text())
    assert paper["n_permutations"] == 99


@pytest.mark.slow
def test_external_headline_unharmonised_combat_sensitivity(null_run):
    """The headline external rows are the models on the features as extracted: the saved models
    applied to the cohort's own scans reproduce them (ComBat would move them); ComBat's external
    results sit in a separate sensitivity table, not in metrics.json."""
    cohort = sources.data_root(ROOT) / "cohorts" / json.loads(
        (null_run / "run_card.json").read_text(encoding="utf-8"))["cohort"]
    pred = bundle.predict(null_run, cohort, cache_dir=null_run.parent / "cache")
    rec = pd.read_csv(null_run / "tables" / "predictions.csv", dtype={"patient_id": str})
    for model in MODELS:
        r = rec[(rec.model == model) & (rec.split == "external")].set_index("patient_id")
        p = pred[pred.model == model].set_index("patient_id").loc[r.index, "score"]
        np.testing.assert_allclose(p.to_numpy(), r["score"].to_numpy(), rtol=0, atol=1e-9)
    v = bundle.verify(null_run, cohort, predicted=pred)
    assert set(v.model) == MODELS and set(v.split) == {"test"} and v.reproduced.all()
    sens = pd.read_csv(null_run / "tables" / "table5_external_combat_sensitivity.csv")
    assert set(sens.model) == {f"{m}+ComBat" for m in MODELS}
    assert set(sens.harmonisation) == {"combat"} and set(sens.analysis) == {"sensitivity"}
    both = pd.read_csv(null_run / "tables" / "external_harmonisation.csv")
    assert set(both.loc[both.analysis == "headline", "harmonisation"]) == {"none"}
    metrics = json.loads((null_run / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["models"]) == MODELS  # no ComBat model among the headline ones
    cut = both.set_index("model")["cutoff"]
    assert cut["T1WI+T2WI+ComBat"] == cut["T1WI+T2WI"]  # the same cut-off, applied


@pytest.mark.slow
def test_report_figures_listed_in_checklist(null_run):
    """Issue 20: flow diagram and feature contributions are found by the model card's
    checklist (CLEAR 43, 45); the montage shows validation patients of each kind that exists."""
    chk = modelcard.checklist(null_run).set_index(["checklist", "item"])
    assert "figures/flow_diagram.png" in chk.loc[("CLEAR", 45), "evidence"]
    assert "feature_contributions" in chk.loc[("CLEAR", 43), "evidence"]
    montage = pd.read_csv(null_run / "tables" / "case_montage.csv", dtype={"patient_id": str})
    pred = pd.read_csv(null_run / "tables" / "predictions.csv", dtype={"patient_id": str})
    test = pred[(pred.model == "T1WI+T2WI") & (pred.split == "test")]
    assert set(montage.patient_id) <= set(test.patient_id) and len(montage) >= 2
    contrib = pd.read_csv(null_run / "tables" / "feature_contributions.csv")
    assert (contrib.method == "linear").all()
    coef = pd.read_csv(null_run / "tables" / "fig2_coefficients.csv")
    assert set(contrib.feature) == set(coef.feature) - {"intercept"}


# ------------------------------------------------------------------------------------------
# 2. a real lumbar MRI fixture cohort: one reader, a given split, DXA columns
# ------------------------------------------------------------------------------------------
GIVEN_TEST = ["VB3-02", "VB3-05", "VB3-09", "VB3-12"]


def _lumbar_fixture(src: Path, out: Path) -> Path:
    """12 VB3 volunteers (water images; mask labels 1-4 = L1-L4), reader 1 only, the split
    given (8 train / 4 test), DXA columns drawn per patient from a seeded rng."""
    import SimpleITK as sitk

    from vcfnb.sources import _levels_vb3

    out.mkdir(parents=True)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    g = np.random.default_rng(20261130)
    cases, rois = [], []
    codes = sorted(f.name[:2] for f in (src / "VB3").glob("*_image.nii.gz"))
    abnormal = dict(zip(codes, [1, 0] * 6))
    for code in codes:
        pid = f"VB3-{code}"
        shutil.copy(src / "VB3" / f"{code}_image.nii.gz", out / "images" / f"{pid}.nii.gz")
        shutil.copy(src / "VB3" / f"{code}_mask.nii.gz", out / "masks" / f"{pid}.nii.gz")
        levels = _levels_vb3(sitk.GetArrayFromImage(sitk.ReadImage(str(src / "VB3" /
                                                                       f"{code}_mask.nii.gz"))))
        t = g.uniform(-3.2, -1.2) if abnormal[code] else g.uniform(-0.8, 1.5)
        cases.append({"patient_id": pid, "age": round(float(g.uniform(52, 78)), 1),
                      "t_score": round(float(t), 2), "z_score": round(float(t + 0.8), 2),
                      "outcome": abnormal[code], "split": "test" if pid in GIVEN_TEST else "train"})
        for lev, lab in levels.items():
            rois.append({"patient_id": pid, "roi": lev, "sequence": "WATER", "reader": 1,
                         "image": f"images/{pid}.nii.gz", "mask": f"masks/{pid}.nii.gz",
                         "label": lab})
    pd.DataFrame(cases).to_csv(out / "cases.csv", index=False)
    pd.DataFrame(rois).to_csv(out / "rois.csv", index=False)
    return out


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


LUMBAR_PARAMS = {"sequences": ["WATER"], "models": {"WATER": ["WATER"]}, "main_model": "WATER",
                 "image_types": ["Original"], "feature_classes": ["firstorder"], "log_sigma": [],
                 "cv_folds": 4, "lasso_cv": 3, "lasso_rule": "min", "n_permutations": 3,
                 "paper_numbers": {}, "n_jobs": 2, "recovery": True, "recovery_draws": 1,
                 "recovery_permutations": 2}


@pytest.fixture(scope="module")
def lumbar(shared_data, tmp_path_factory):
    src = shared_data / "lumbar_mri"
    if not (src / "VB3").is_dir():
        pytest.skip(f"{src / 'VB3'} is absent")
    base = tmp_path_factory.mktemp("lumbar_fixture")
    cohort = _lumbar_fixture(src, base / "cohort")
    before = _digest(cohort)
    _execute(base / "run", cohort_dir=str(cohort), **LUMBAR_PARAMS)
    return {"cohort": cohort, "before": before, "run": base / "run", "base": base, "src": src}


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_given_split_honoured(lumbar):
    report = lumbar["run"] / "report"
    pred = pd.read_csv(report / "tables" / "predictions.csv")
    assert sorted(set(pred.loc[pred.split == "test", "patient_id"])) == GIVEN_TEST
    given_train = set(pd.read_csv(lumbar["cohort"] / "cases.csv").query("split == 'train'")
                      .patient_id)
    assert set(pred.loc[pred.split == "train_oof", "patient_id"]) == given_train
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert schema.validate(metrics) == [] and metrics["status"] == "ok"
    assert metrics["simulated"] is False and metrics["main_models"] == ["WATER"]
    assert metrics["permutation"]["WATER"]["n_permutations"] == 3
    text = _markdown_outputs(lumbar["run"] / "executed.ipynb")
    assert "Split **given by the cohort**: train 8 (4 abnormal), test 4 (2 abnormal)" in text


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_saved_model_reproduces_test_scores(lumbar):
    """The saved radscore model (with its probability link) rebuilds the validation patients'
    rows from the cohort's scans and reproduces their recorded scores exactly."""
    report = lumbar["run"] / "report"
    v = bundle.verify(report, lumbar["cohort"], cache_dir=lumbar["run"] / "cache")
    assert v.to_dict("records")[0]["model"] == "WATER" and len(v) == 1
    assert v.loc[0, "split"] == "test" and v.loc[0, "n"] == len(GIVEN_TEST)
    assert bool(v.loc[0, "reproduced"]) and v.loc[0, "max_abs_diff"] < 1e-9
    meta = json.loads((report / "models" / "WATER.json").read_text(encoding="utf-8"))
    assert meta["score_kind"] == "probability" and meta["feature_recipe"]["rois"] == \
        ["L1", "L2", "L3", "L4"]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_recovery_check_runs_when_asked(lumbar):
    """recovery: true plants 0 and 1 SD effects into the training features (1 draw each here)."""
    report = lumbar["run"] / "report"
    rec = pd.read_csv(report / "tables" / "recovery_check.csv")
    assert sorted(rec.d) == [0.0, 1.0] and (rec.n_permutations == 2).all()
    assert set(pd.read_csv(report / "tables" / "recovery_summary.csv").d) == {0.0, 1.0}
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert not any(n.startswith("Recovery check not run") for n in metrics["notes"])


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_cohort_folder_untouched(lumbar):
    assert _digest(lumbar["cohort"]) == lumbar["before"]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_single_reader_and_no_external_said(lumbar):
    """Defects 4 and 10: one reader skips the ICC filter with a note; no external cohort skips
    its figure and table with a line, without warnings; the text gives the ROIs' real extent."""
    report, executed = lumbar["run"] / "report", lumbar["run"] / "executed.ipynb"
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert any("single-reader mode" in n and "ICC" in n for n in metrics["notes"])
    assert not (report / "tables" / "icc.csv").exists()
    text = _markdown_outputs(executed)
    assert "**Skipped:** single-reader mode" in text
    assert "**no external cohort** in this run" in text
    assert "No external cohort in this run" in text
    assert not (report / "figures" / "fig9_external_roc.png").exists()
    assert not (report / "tables" / "table5_external.csv").exists() or pd.read_csv(
        report / "tables" / "table5_external.csv").empty
    assert "RuntimeWarning" not in _stderr(executed)
    assert "mid-sagittal slice and its two neighbours" not in text
    assert "labelled 12 of 12 patients (6 abnormal, 6 normal)" in text
    assert "slices (median" in text and "spans 3–3 slices" not in text  # the real 3D bodies


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_planted_faults_refused_before_extraction(lumbar):
    """Four planted faults (a misnamed and a missing DXA column, an absent ROI name, folds the
    class sizes cannot fill) are listed in ONE refusal, and nothing was extracted."""
    import papermill as pm

    bad = lumbar["base"] / "bad_cohort"
    shutil.copytree(lumbar["cohort"], bad)
    cases = pd.read_csv(bad / "cases.csv").rename(columns={"t_score": "T_score"}).drop(columns="age")
    cases.to_csv(bad / "cases.csv", index=False)
    rois = pd.read_csv(bad / "rois.csv")
    rois["roi"] = rois["roi"].replace({"L4": "L5"})
    rois.to_csv(bad / "rois.csv", index=False)
    out = lumbar["base"] / "bad_run"
    with pytest.raises(pm.PapermillExecutionError) as err:
        _execute(out, cohort_dir=str(bad), **{**LUMBAR_PARAMS, "cv_folds": 6})
    message = str(err.value)
    assert "does not meet 4 requirement(s)" in message
    assert "'t_score' is missing" in message and "'T_score' exists" in message
    assert "'age' is missing" in message
    assert "no ROI named 'L4'" in message
    assert "parameter 'cv_folds' = 6" in message and "set cv_folds: 4 or less" in message
    cache = out / "cache"
    assert not cache.exists() or not any(cache.rglob("*"))  # nothing extracted
    unmet = pd.read_csv(out / "report" / "tables" / "requirements_unmet.csv")
    assert len(unmet) == 4
