"""The metastasis notebook end to end through papermill (smoke size): outputs, a negative control,
a user cohort with a `split` column, and report text that describes the run."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vcfnb import metrics, runner

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "metastasis_lytic_blastic.ipynb"


def _markdown_outputs(executed: Path) -> str:
    nb = json.loads(executed.read_text(encoding="utf-8"))
    return "\n".join("".join(o.get("data", {}).get("text/markdown", ""))
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One feature cache for this module's runs (the user-cohort run reuses the signal-0
    cohort's images, so nothing is extracted twice)."""
    return tmp_path_factory.mktemp("metastasis_cache")


@pytest.fixture
def run(tmp_path, cache, run_study_notebook):
    """``run(**params)``: the notebook into ``tmp_path`` (``report/``, ``out.ipynb``) ->
    (report folder, metrics)."""
    return lambda **params: run_study_notebook(NB, tmp_path, cache, params)


def test_common_parameters_exist():
    """Issue 17 defect 7: the documented common parameters are notebook parameters; the old
    `perm_sfs_repeats` (permuting other settings than the reported model) is gone."""
    runner.validate_params(NB, {"outcome": "outcome", "mask_grid": "resample",
                                "geometry_tol": 1e-3, "cohort_dir": "", "sfs_folds": 5})
    with pytest.raises(runner.ParamsError):
        runner.validate_params(NB, {"perm_sfs_repeats": 1})


@pytest.mark.slow
def test_negative_control_signal0(tmp_path, run):
    """No class effect: the permutation null is centred at 0.5 and the observed CV AUCs are not
    extreme in it; metrics.json validates and the predictions table is complete.

    19 permutations per model make p = 0.05 reachable, so the assertions can fail (a leaky
    pipeline shifts the null above 0.5 and the observed AUC to its top). The CIs are
    Nadeau-Bengio corrected (refitting variance included).
    """
    out, m = run(synthetic_signal=0.0, n_permutations=19, n_permutations_semantic=19,
                 cv_folds=5, sfs_folds=5, sfs_repeats=1, sfs_max_features=2, seed=0,
                 cv_repeats=2)
    assert metrics.validate(m) == [], metrics.validate(m)
    assert m["simulated"] is True and m["study"] == "metastasis_lytic_blastic"
    assert m["status"] == "ok" and m["main_models"] == ["radiomics"]
    for model, (n_perm, tol, p_min) in {"radiomics": (19, 0.08, 0.05),
                                        "semantic": (19, 0.08, 0.05)}.items():
        cv = m["models"][model]["cv"]
        assert cv["n"] == 36 and cv["ci_method"] == "nadeau-bengio"  # CIs that hold for CV
        perm = m["permutation"][model]
        assert perm["split"] == "cv" and perm["n_permutations"] == n_perm
        assert perm["observed_auc"] == pytest.approx(cv["auc"], abs=1e-6)  # the reported AUC
        assert abs(perm["null_mean"] - 0.5) < tol, (model, perm)
        assert perm["p_value"] > p_min, (model, perm)
        null = pd.read_csv(out / "tables" / f"permutation_{model}.csv")["null_auc"]
        assert len(null) == n_perm and null.between(0, 1).all() and null.std() > 0
    # calibration only for the probability model; the SVM's decision values get none
    assert m["models"]["radiomics"]["cv"]["brier"] is None
    assert m["models"]["semantic"]["cv"]["hl_dof"] == m["models"]["semantic"]["cv"]["hl_groups"]
    assert m["models"]["radiomics"]["cv"]["cutoff"] == 0.0
    assert m["models"]["semantic"]["cv"]["cutoff"] == 0.5
    assert [(d["model_a"], d["model_b"], d["split"]) for d in m["comparisons"]["delong"]] == [
        ("radiomics", "semantic", "cv")]
    assert not any(k.endswith("_permutation") for k in m["models"])  # no pseudo-models
    pred = pd.read_csv(out / "tables" / "predictions.csv")
    assert list(pred.columns[:6]) == ["model", "split", "patient_id", "y_true", "score",
                                      "score_kind"] and "fold" in pred
    counts = pred.groupby(["model", "split"]).size().to_dict()
    assert counts == {("radiomics", "cv"): 36, ("radiomics", "final"): 36,
                      ("semantic", "cv"): 72, ("semantic", "final"): 36}  # 2 CV repeats
    cv = pred[pred.split == "cv"]
    assert set(cv.fold) == set(range(5)) and set(cv["repeat"]) == {0, 1}
    # both models on the same folds (paired comparison)
    folds = cv[cv["repeat"] == 0].pivot(index="patient_id", columns="model", values="fold")
    assert (folds["radiomics"] == folds["semantic"]).all()
    assert set(pred.loc[pred.model == "radiomics", "score_kind"]) == {"decision"}
    assert set(pred.loc[pred.model == "semantic", "score_kind"]) == {"probability"}
    for t in ("table2_primary_location", "table3_semantic", "table4_performance", "delong",
              "calibration", "decision_curve", "mvr_correlation", "feature_counts",
              "selection_frequency", "selection_history_full_data", "paper_vs_run",
              "provenance", "cohort_problems", "permutation_test", "permutation_test_semantic",
              "model_comparison_cv", "case_montage_cases", "feature_contributions_radiomics",
              "feature_contributions_semantic"):
        assert (out / "tables" / f"{t}.csv").is_file(), t
    paper = pd.read_csv(out / "tables" / "paper_vs_run.csv").set_index("quantity")
    assert paper.loc["radiomics/cv/auc", "this_run"] == pytest.approx(
        m["models"]["radiomics"]["cv"]["auc"], abs=1e-6)
    for f in ("fig4_roc", "fig3_mvr_scatter", "permutation_null", "decision_curve",
              "flow_diagram", "case_montage", "feature_contributions_radiomics",
              "feature_contributions_semantic"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000, f
    # issue 17 defect 10: the narrative states this run's numbers, not the paper's cohort
    text = _markdown_outputs(tmp_path / "out.ipynb")
    assert ("36 of 36 lesions have every feature on every sequence and enter both models: "
            "12 osteoblastic (positive class) and 24 osteolytic") in text
    assert "same 5-fold stratified cross-validation" in text
    assert "5-fold inner CV repeated 1 time(s)" in text and "at 2 features" in text
    assert "no `split` column" in text and "normalisation is **on**" in text
    assert "19 label permutations" in text and "19 of the semantic model" in text
    assert any("5-fold inner CV x 1 repeat(s) (paper: 10-fold x 1000)" in n for n in m["notes"])


@pytest.fixture(scope="module")
def user_run(tmp_path_factory, cache, run_study_notebook):
    """The notebook on a user cohort (a copy of the smoke signal-0 cohort with a `split`
    column, not marked simulated): (report folder, metrics, executed notebook, cohort folder,
    cohort digest before the run)."""
    from vcfnb import synth

    work = tmp_path_factory.mktemp("user_run")
    built = synth.make_cohort("metastasis", work / "built", size="smoke", seed=0, signal=0.0)
    cohort = work / "user"
    shutil.copytree(built, cohort)
    cases = pd.read_csv(cohort / "cases.csv")
    cases["split"] = np.where(np.arange(len(cases)) % 4 == 0, "test", "train")
    cases.to_csv(cohort / "cases.csv", index=False)
    (cohort / "cohort.json").unlink()  # a user's folder: not marked as simulated
    before = _digest(cohort)
    out, m = run_study_notebook(NB, work, cache, {
        "cohort_dir": str(cohort), "n_permutations": 1, "n_permutations_semantic": 1,
        "cv_folds": 3, "sfs_folds": 2, "sfs_repeats": 1, "sfs_max_features": 1,
        "cv_repeats": 2, "contribution_repeats": 3})
    return out, m, work / "out.ipynb", cohort, before


@pytest.mark.slow
def test_user_cohort_split_ignored_and_untouched(user_run):
    """A user cohort with a `split` column (issue 17): the CV-only study says it ignores the
    split and evaluates every lesion by CV, and writes nothing into the cohort folder."""
    out, m, executed, cohort, before = user_run
    assert _digest(cohort) == before  # nothing written into the user's cohort
    assert metrics.validate(m) == []
    assert m["models"]["radiomics"]["cv"]["n"] == 36  # test-split lesions are in the CV too
    text = _markdown_outputs(executed)
    assert "`split` column (test, train) is **ignored**" in text
    assert "same 3-fold stratified cross-validation" in text
    assert "repeated with new folds 2 time(s) for the semantic model" in text
    assert any("`split` column is ignored" in n for n in m["notes"])  # on the run card too
    # statistics that do not exist are shown as "—" (the first SFS step has no gain), not NaN
    nb = json.loads(executed.read_text(encoding="utf-8"))
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in nb["cells"]
                   if c["cell_type"] == "code" and "selection_history_full_data" in "".join(c["source"])
                   for o in c.get("outputs", []))
    assert "—" in html and ">nan<" not in html.lower()


@pytest.mark.slow
def test_report_figures_and_saved_model_reproduce_final_scores(user_run, cache):
    """Issue 20: the final radiomics model refitted on all lesions is saved, and
    `vcfnb.bundle.verify` rebuilds its rows from the cohort and reproduces exactly the
    recorded `final` scores; the report has the flow diagram, the case montage and both
    models' feature contributions (>= 5 figures, listed on the run card); the CIs are
    Nadeau-Bengio (CV), the model comparison is the corrected resampled t-test and table 3
    is the paper's Pearson chi-square."""
    from vcfnb import bundle

    out, m, _, cohort, _ = user_run
    meta = json.loads((out / "models" / "radiomics.json").read_text(encoding="utf-8"))
    assert meta["reproduces_split"] == "final" and meta["cutoff"] == 0.0
    assert meta["score_kind"] == "decision" and len(meta["input_columns"]) == 321
    check = bundle.verify(out, cohort, cache_dir=cache)
    assert check.model.tolist() == ["radiomics"] and check.split.tolist() == ["final"]
    assert check.n.tolist() == [36] and check.reproduced.all(), check
    assert check.max_abs_diff.iat[0] < 1e-8
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    for f in ("flow_diagram", "case_montage", "feature_contributions_radiomics",
              "feature_contributions_semantic", "fig4_roc", "permutation_null"):
        assert f in figures and (out / "figures" / f"{f}.png").stat().st_size > 1000, f
    assert any(n.startswith(f"Figures ({len(figures)}): ") for n in m["notes"])
    assert any("Recovery check not run" in n for n in m["notes"])
    montage = pd.read_csv(out / "tables" / "case_montage_cases.csv")
    assert set(montage.kind) <= {"TP", "TN", "FP", "FN"} and len(montage) >= 2
    rad = pd.read_csv(out / "tables" / "feature_contributions_radiomics.csv")
    assert set(rad.method) == {"permutation"} and set(rad.feature) <= set(meta["input_columns"])
    sem = pd.read_csv(out / "tables" / "feature_contributions_semantic.csv")
    assert set(sem.method) == {"linear"} and len(sem) >= 5
    for model in ("radiomics", "semantic"):
        assert m["models"][model]["cv"]["ci_method"] == "nadeau-bengio"
    table4 = pd.read_csv(out / "tables" / "table4_performance.csv").set_index("model")
    assert table4.loc["semantic", "cv_repeats"] == 2 and table4.loc["radiomics", "cv_repeats"] == 1
    comp = pd.read_csv(out / "tables" / "model_comparison_cv.csv")
    assert comp.method.tolist() == ["nadeau-bengio"] and comp.n_folds.tolist() == [3]
    t3 = pd.read_csv(out / "tables" / "table3_semantic.csv")
    assert set(t3.test.dropna()) == {"Pearson chi-square"}  # the paper's SPSS test


@pytest.mark.slow
def test_cohort_without_labels_stops_after_features(tmp_path, run):
    """`require_outcome: false` (issue 17, features-only mode): a cohort without `outcome` and
    `lesion_type` passes the pre-flight check, its features are saved, and the run stops
    cleanly before any model, saying why."""
    import papermill as pm

    from vcfnb import synth

    cohort = synth.make_cohort("metastasis", tmp_path / "c", size="smoke", seed=0, signal=0.0)
    cases = pd.read_csv(cohort / "cases.csv").drop(columns=["outcome", "lesion_type"])
    cases.to_csv(cohort / "cases.csv", index=False)
    (cohort / "cohort.json").unlink()
    with pytest.raises(pm.PapermillExecutionError, match="no outcome labels"):
        run(cohort_dir=str(cohort), require_outcome=False)
    out = tmp_path / "report"
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics.validate(m) == []
    assert m["status"] == "stopped" and "no outcome labels" in m["stopped_reason"]
    assert m["models"] == {} and not (out / "tables" / "predictions.csv").exists()
    feats = pd.read_csv(out / "tables" / "features.csv", index_col=0)
    assert len(feats) == 36 and feats.shape[1] == 321
