"""ovf_prediction_ct notebook end to end: a user's cohort (negative control, given split, folder
left untouched), real CT (no outcome), and real_ct never writing into a cohort folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "ovf_prediction_ct.ipynb"
MODELS = {"cortical", "cancellous", "vertebral", "vBMD", "combined"}


def _run(tmp_path: Path, **params) -> Path:
    pm = pytest.importorskip("papermill")
    out = tmp_path / "report"
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "executed.ipynb"), kernel_name="vcfnb",
                        parameters={"out_dir": str(out), "cache_dir": str(tmp_path / "cache"),
                                    **params}, cwd=str(ROOT / "notebooks"), progress_bar=False)
    return out


def _digests(folder: Path) -> dict[str, str]:
    """Content digest of every file under ``folder`` (names relative to it)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _notebook_text(path: Path) -> str:
    """Markdown sources and every text/markdown output of an executed notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            parts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for kind in ("text/markdown", "text/plain"):
                if kind in data:
                    parts.append("".join(data[kind]))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's cohort (the simulated negative control, signal 0) with its own ``split``
    column, run at smoke size with 19 permutations; returns (report, cohort, digests before,
    given split, executed notebook)."""
    import vcfnb as vc

    tmp = tmp_path_factory.mktemp("ovf_user")
    folder = vc.synth.make_cohort("ovf", tmp / "my_cohort", size="smoke", seed=3, signal=0.0)
    cases = pd.read_csv(folder / "cases.csv", dtype={"patient_id": str})
    # a split the user fixed: every third patient of each group is a test patient
    cases["split"] = ["test" if i % 3 == 0 else "train"
                      for i in cases.groupby("outcome").cumcount()]
    cases.to_csv(folder / "cases.csv", index=False)
    before = _digests(folder)
    out = _run(tmp, cohort_dir=str(folder), n_permutations=19, lasso_cv=3, oof_folds=3,
               mrmr_k=20)
    return out, folder, before, cases.set_index("patient_id")["split"], tmp / "executed.ipynb"


@pytest.mark.slow
def test_user_cohort_is_left_byte_identical(user_run):
    """Issue 17 defect 3: no vcfnb code writes into the cohort folder."""
    out, folder, before, _, _ = user_run
    assert _digests(folder) == before
    assert (out / "metrics.json").is_file()


@pytest.mark.slow
def test_given_split_is_honoured(user_run):
    """Issue 17 defect 1: matching first (as the paper), then the user's split, unchanged."""
    out, _, _, given, _ = user_run
    pred = pd.read_csv(out / "tables" / "predictions.csv", dtype={"patient_id": str})
    for split in ("train", "test"):
        ids = set(pred.loc[(pred.model == "combined") & (pred.split == split), "patient_id"])
        assert ids and set(given[list(ids)]) == {split}, split
    oof = pred[(pred.model == "combined") & (pred.split == "train_oof")]
    assert set(oof.patient_id) == set(pred.loc[(pred.model == "combined")
                                               & (pred.split == "train"), "patient_id"])


@pytest.mark.slow
def test_metrics_predictions_and_negative_control(user_run):
    from vcfnb.metrics import validate

    out, _, _, _, _ = user_run
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert validate(metrics) == []
    assert metrics["study"] == "ovf_prediction_ct" and metrics["simulated"] is True
    assert metrics["status"] == "ok" and metrics["main_models"] == ["combined"]
    assert set(metrics["models"]) == MODELS
    for name, splits in metrics["models"].items():
        assert set(splits) == {"train", "train_oof", "test"}, name
        assert splits["test"]["cutoff_split"] == "train_oof"
        assert splits["test"]["hl_dof"] == splits["test"]["hl_groups"]  # independent data: g
    assert {(c["model_a"], c["model_b"], c["split"]) for c in metrics["comparisons"]["delong"]} \
        >= {("vertebral", "combined", "test"), ("vertebral", "combined", "train")}
    pred = pd.read_csv(out / "tables" / "predictions.csv")
    assert list(pred.columns[:6]) == ["model", "split", "patient_id", "y_true", "score",
                                      "score_kind"]
    assert set(pred.model) == MODELS and set(pred.split) == {"train", "train_oof", "test"}
    # one whole-pipeline permutation test of the headline model, its observed AUC the reported
    perm = metrics["permutation"]
    assert set(perm) == {"combined"} and perm["combined"]["split"] == "test"
    assert perm["combined"]["n_permutations"] == 19
    assert perm["combined"]["observed_auc"] == pytest.approx(
        metrics["models"]["combined"]["test"]["auc"], abs=1e-6)
    # signal 0: the null is centred on chance and the observed AUC is not extreme in it
    assert abs(perm["combined"]["null_mean"] - 0.5) < 0.1, perm
    assert perm["combined"]["p_value"] > 0.05, perm
    tables = {p.stem for p in (out / "tables").glob("*.csv")}
    assert {"balance_smd", "table1_baseline", "compartments", "lasso_selected",
            "table2_radscore_models_train", "table3_radscore_models_test",
            "table4_vbmd_models_train", "table5_vbmd_models_test", "table6_delong",
            "permutation_combined", "paper_vs_run", "provenance"} <= tables
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"fig5_lasso", "fig6_radscore_models", "fig7_vbmd_models", "permutation_null",
            "flow_diagram", "case_montage", "feature_contributions"} <= figures
    from vcfnb.report import run_card_markdown

    card = run_card_markdown(out)  # the run card lists every figure
    assert all(f"figures/{f}.png" in card for f in figures), card
    assert any("Recovery check not run" in n for n in metrics["notes"])
    # table 1's vBMD is the image vBMD the models use (one source), not the cohort column
    t1 = pd.read_csv(out / "tables" / "table1_baseline.csv")
    dens = pd.read_csv(out / "tables" / "vbmd_per_vertebra.csv")
    assert "mean_hu" in dens and t1.astype(str).apply(lambda c: c.str.contains("vbmd")).any().any()
    bal = pd.read_csv(out / "tables" / "balance_smd.csv")
    assert (bal.smd_after.abs() < 0.25).all()
    comp = pd.read_csv(out / "tables" / "compartments.csv")  # 4 levels x 2 compartments
    assert len(comp) == 8 and comp.vois.nunique() == 1 and (comp.derived == comp.vois).all()


@pytest.mark.slow
def test_saved_models_reproduce_the_recorded_test_scores(user_run, tmp_path):
    """Issue 20: the five saved models (vBMD computed inside from the cancellous VOIs' mean
    CT number) reproduce the test scores of predictions.csv exactly through vcfnb predict,
    on a cohort whose ROIs are the compartment VOIs (what the saved recipe reads)."""
    import vcfnb as vc
    from vcfnb import bundle
    from vcfnb.studies import ovf as study

    out, folder, _, _, _ = user_run
    cohort = vc.io.load_cohort(folder)
    voi = study.compartment_rois(cohort.rois, tmp_path / "compartments", shell_mm=2.0)
    given = tmp_path / "compartment_cohort"
    given.mkdir()
    cohort.cases.to_csv(given / "cases.csv", index=False)
    voi[["patient_id", "roi", "sequence", "reader", "image", "mask", "label"]].to_csv(
        given / "rois.csv", index=False)
    saved = {json.loads(f.read_text(encoding="utf-8"))["model"] for f in bundle.saved_models(out)}
    assert saved == MODELS
    check = bundle.verify(out, given, cache_dir=tmp_path / "cache")
    assert len(check) == 5 and check.reproduced.all(), check
    assert (check.split == "test").all() and (check.n > 0).all()


@pytest.mark.slow
def test_report_text_describes_the_run(user_run):
    """Issue 17 defect 10: narrative numbers come from the run (3-fold LASSO CV was set,
    the split was given, there is no external cohort), not from the paper's cohort."""
    out, _, _, given, executed = user_run
    text = _notebook_text(executed)
    n_train = int(pd.read_csv(out / "tables" / "predictions.csv").query(
        "model == 'combined' and split == 'train'").shape[0])
    assert "chosen by 3-fold CV" in text and "10-fold" not in text
    assert "glmnet's convergence criterion: thresh 1e-07 × the null deviance per vertebra" in text
    assert f"{n_train} training patients" in text
    assert "Split: given" in text and "no external cohort in this run" in text
    assert "no whole-image intensity normalisation" in text
    assert "Out-of-fold training predictions from 3 stratified folds" in text
    by_class = pd.read_csv(out / "tables" / "calibration_by_class.csv")
    assert set(by_class.split) == {"test"} and set(by_class.y_true) == {0, 1}
    assert "combined, test: mean predicted probability" in text


@pytest.mark.slow
def test_real_ct_never_writes_into_cohort_dir(tmp_path, shared_data):
    """Issue 17 defect 3: ``real_ct`` with a ``cohort_dir`` overwrote the user's cases.csv,
    rois.csv and README.md; now it is refused before anything is written."""
    from papermill.exceptions import PapermillExecutionError

    folder = tmp_path / "users_cohort"
    folder.mkdir()
    for name, text in (("cases.csv", "patient_id,outcome\nA,1\nB,0\n"),
                       ("rois.csv", "patient_id,roi,sequence,reader,image,mask,label\n"),
                       ("README.md", "my own cohort\n")):
        (folder / name).write_text(text, encoding="utf-8")
    before = _digests(folder)
    with pytest.raises(PapermillExecutionError) as err:
        _run(tmp_path, real_ct=True, shared_data=str(shared_data), cohort_dir=str(folder))
    assert "leave cohort_dir empty" in str(err.value)
    assert _digests(folder) == before


@pytest.mark.slow
def test_real_ct_runs_and_stops_without_outcome(tmp_path, shared_data):
    from papermill.exceptions import PapermillExecutionError

    from vcfnb.metrics import validate

    # the run stops cleanly (vcfnb.report.StopRun, which the runner counts as "stopped")
    with pytest.raises(PapermillExecutionError) as err:
        _run(tmp_path, real_ct=True, shared_data=str(shared_data),
             levels=["T11", "T12", "L1", "L2", "L3", "L4"], n_permutations=0)
    assert err.value.ename == "StopRun"
    out = tmp_path / "report"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert validate(metrics) == []
    assert metrics["simulated"] is False and metrics["status"] == "stopped"
    assert metrics["models"] == {} and metrics["permutation"] == {}
    assert not (out / "tables" / "predictions.csv").exists()
    assert any("no outcome labels" in n for n in metrics["notes"])
    # the derived real-CT cohort lives under the run's cache folder
    assert (tmp_path / "cache" / "cohorts" / "ovf-real-ct" / "rois.csv").is_file()
    comp = pd.read_csv(out / "tables" / "compartments.csv")
    # TPTBox L2-L4 given as split + TotalSegmentator T12-L2 split by erosion
    assert set(comp.level) == {"T12", "L1", "L2", "L3", "L4"}
    assert set(comp.compartment) == {"cortical", "cancellous"}
    dens = pd.read_csv(out / "tables" / "vbmd_per_vertebra.csv")
    assert len(dens) == 6
    # real trabecular bone: cancellous CT numbers in a physiological range
    assert dens.mean_hu.between(20, 350).all(), dens
    fails = pd.read_csv(out / "tables" / "feature_failures.csv")
    assert fails.empty, fails
    assert (out / "tables" / "provenance.csv").is_file()
