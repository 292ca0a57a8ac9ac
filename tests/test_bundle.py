"""Saved models and ``vcfnb predict`` (vcfnb.bundle) on a small simulated cohort."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import vcfnb.features as F
from vcfnb import bundle, io, models, stats, synth
from vcfnb.report import Run

SETTINGS = {"imageType": {"Original": {}}, "featureClass": {"firstorder": []},
            "setting": {"binWidth": 25}}
RECIPE = {"sequences": ["T1", "T2", "FS-T2"], "rois": ["lesion"], "reader": "1",
          "aggregate": "mean", "prefix": {"T1": "T1WI", "T2": "T2WI", "FS-T2": "FST2WI"}}
ROWS_RECIPE = {**RECIPE, "sequences": ["T2"], "aggregate": "rows", "prefix": {"T2": "T2WI"}}


def make_run(base: Path) -> dict:
    """A simulated metastasis run with two saved models (probability LR pipeline, decision
    radscore on per-ROI rows): what a study notebook does, on a few features."""
    cohort_dir = synth.make_cohort("metastasis", base / "cohort", size="smoke", seed=0)
    cohort = io.load_cohort(cohort_dir)
    cache = base / "cache"
    run = Run(study="metastasis_lytic_blastic", params={"seed": 0}, root=base,
              out_dir=base / "report", cache_dir=cache, cohort=cohort, simulated=True,
              main_models=["LR", "Radscore"])
    feats = F.extract(cohort.rois, SETTINGS, n_jobs=1, cache_dir=cache, progress=False)
    y = cohort.cases.set_index("patient_id")["outcome"].astype(int)
    train_ids, test_ids = (t["patient_id"].tolist() for t in
                           models.split_by_patient(cohort.cases, "outcome", rng=0))

    X = F.patient_table(feats, RECIPE)
    cols = [c for c in X.columns if c.endswith(("_Mean", "_Median", "_Skewness", "_Entropy"))]
    pipe = models.make_radiomics_pipeline(["zscore", ("lr", {"C": 0.5})], rng=0)
    oof = models.cv_predict(pipe, X.loc[train_ids, cols], y[train_ids], cv=3, rng=0)
    run.predictions("LR", "train_oof", score=oof["score"], y_true=y[train_ids])
    pipe.fit(X.loc[train_ids, cols], y[train_ids])
    test = pd.Series(pipe.predict_proba(X.loc[test_ids, cols])[:, 1], index=test_ids)
    run.predictions("LR", "test", score=test, y_true=y[test_ids])

    R = F.patient_table(feats, ROWS_RECIPE)  # index (patient_id, roi)
    pid = R.index.get_level_values("patient_id")
    rad = models.RadscoreModel(lam=0.05, random_state=0)
    rtr = R[pid.isin(train_ids)]
    roof = models.cv_predict(models.RadscoreModel(lam=0.05, random_state=0), rtr,
                             y[rtr.index.get_level_values(0)].to_numpy(), cv=3, rng=0)
    roof_p = roof["score"].groupby(level=0).mean()
    run.predictions("Radscore", "train_oof", score=roof_p, y_true=y, score_kind="decision")
    rad.fit(rtr, y[rtr.index.get_level_values(0)].to_numpy())
    rte = R[pid.isin(test_ids)]
    rtest = models.aggregate_by_patient(rad.decision_function(rte),
                                        rte.index.get_level_values(0))
    run.predictions("Radscore", "test", score=rtest, y_true=y, score_kind="decision")

    pred = run.predictions_table
    perf = stats.evaluate(pred, ci="delong", cutoff="youden", cutoff_split="train_oof")
    cal = stats.calibration(pred, hl_groups=3, hl_dof={"train_oof": "g-2", "test": "g"})
    run.record(perf, cal)
    perm = models.permutation_test(pipe, X.loc[train_ids, cols], y[train_ids],
                                   X_test=X.loc[test_ids, cols], y_test=y[test_ids],
                                   n_permutations=19, rng=1)
    run.record_permutation("LR", perm, split="test")
    run.note("simulated cohort, firstorder features only: a test fixture")
    run.save_model("LR", pipe, feature_recipe=RECIPE, feature_columns=cols,
                   score_kind="probability", X_train=X.loc[train_ids, cols], settings=SETTINGS)
    run.save_model("Radscore", rad, feature_recipe=ROWS_RECIPE, feature_columns=list(R.columns),
                   score_kind="decision", X_train=rtr, settings=SETTINGS)
    run.provenance()
    return {"run": run, "cohort_dir": cohort_dir, "cache": cache, "train": train_ids,
            "test": test_ids, "X": X, "cols": cols}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    return make_run(tmp_path_factory.mktemp("bundle"))


def test_saved_files(saved):
    out = saved["run"].out_dir / "models"
    assert sorted(p.name for p in out.iterdir()) == ["LR.json", "LR.skops", "Radscore.json",
                                                     "Radscore.skops"]
    meta = json.loads((out / "LR.json").read_text(encoding="utf-8"))
    m = json.loads((saved["run"].out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert meta["cutoff"] == m["models"]["LR"]["test"]["cutoff"]
    assert meta["cutoff_split"] == "train_oof"
    assert meta["input_columns"] == saved["cols"]
    assert meta["settings"] == F.load_settings(SETTINGS)
    assert meta["feature_recipe"]["prefix"]["FS-T2"] == "FST2WI"
    assert meta["reproduces_split"] == "test" and meta["study"] == "metastasis_lytic_blastic"
    Xtr = saved["X"].loc[saved["train"], saved["cols"]]
    assert meta["training_ranges"][saved["cols"][0]] == [Xtr.iloc[:, 0].min(),
                                                         Xtr.iloc[:, 0].max()]
    est, _ = bundle.load_model(out / "LR.json")
    assert hasattr(est, "predict_proba")


def test_predict_reproduces_recorded_test_scores(saved, tmp_path):
    out = tmp_path / "pred.csv"
    pred = bundle.predict(saved["run"].out_dir, saved["cohort_dir"], out,
                          cache_dir=saved["cache"])
    assert list(pred.columns) == bundle.PREDICT_COLUMNS
    assert len(pred) == 2 * 36
    rec = saved["run"].predictions_table
    for model in ("LR", "Radscore"):
        r = rec[(rec["model"] == model) & (rec["split"] == "test")].set_index("patient_id")
        p = pred[pred["model"] == model].set_index("patient_id").loc[r.index]
        np.testing.assert_allclose(p["score"], r["score"], rtol=0, atol=1e-10)
        meta = json.loads((saved["run"].out_dir / "models" / f"{model}.json").read_text(encoding="utf-8"))
        assert (p["predicted_class"] == (p["score"] >= meta["cutoff"]).astype(int)).all()
    # training patients lie inside the training ranges
    train = pred[pred["patient_id"].isin(saved["train"])]
    assert (train["out_of_range_features"] == "").all()
    v = bundle.verify(saved["run"].out_dir, saved["cohort_dir"], predicted=pred)
    assert v["reproduced"].all() and set(v["split"]) == {"test"}
    assert pd.read_csv(out, dtype={"patient_id": str}).shape == pred.shape


def _copy_cohort(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_out_of_range_features_are_flagged(saved, tmp_path):
    cohort = _copy_cohort(saved["cohort_dir"], tmp_path / "bright")
    rois = pd.read_csv(cohort / "rois.csv", dtype=str)
    row = rois[(rois["patient_id"] == saved["train"][0]) & (rois["sequence"] == "T1")].iloc[0]
    img = sitk.ReadImage(str(cohort / row["image"]))
    sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32) * 5.0 + 3000.0, str(cohort / row["image"]))
    pred = bundle.predict(saved["run"].out_dir, cohort, cache_dir=saved["cache"],
                          models=["LR"])
    flags = pred.set_index("patient_id")["out_of_range_features"]
    hit = flags[saved["train"][0]].split(";")
    assert "T1WI_original_firstorder_Mean" in hit
    assert all(f.startswith("T1WI_") for f in hit)
    assert (flags.drop(saved["train"][0]).loc[saved["train"][1:]] == "").all()


def test_mismatched_cohort_is_refused(saved, tmp_path):
    cohort = _copy_cohort(saved["cohort_dir"], tmp_path / "no_fst2")
    rois = pd.read_csv(cohort / "rois.csv", dtype=str)
    rois[rois["sequence"] != "FS-T2"].to_csv(cohort / "rois.csv", index=False)
    with pytest.raises(bundle.CohortMismatchError, match=r"sequence 'FS-T2' is absent"):
        bundle.predict(saved["run"].out_dir, cohort, models=["LR"])
    keep = ~((rois["patient_id"] == "M003") & (rois["sequence"] == "T2"))
    rois[keep].to_csv(cohort / "rois.csv", index=False)
    with pytest.raises(bundle.CohortMismatchError, match=r"patient M003 lacks T2/lesion"):
        bundle.predict(saved["run"].out_dir, cohort, models=["LR"])
    rois.assign(roi="tumour").to_csv(cohort / "rois.csv", index=False)
    with pytest.raises(bundle.CohortMismatchError, match=r"ROI 'lesion' is absent"):
        bundle.predict(saved["run"].out_dir, cohort)


def test_altered_or_untrusted_model_file_is_refused(saved, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(saved["run"].out_dir / "models", run_dir / "models")
    meta = json.loads((run_dir / "models" / "LR.json").read_text(encoding="utf-8"))
    meta["sha256"] = "0" * 64
    (run_dir / "models" / "LR.json").write_text(json.dumps(meta))
    with pytest.raises(bundle.UntrustedModelError, match="altered"):
        bundle.load_model(run_dir / "models" / "LR.json")
    assert "builtins.eval" not in bundle._trusted_types()
    import skops.io as sio  # a well-formed file naming a type outside the trusted list

    sio.dump(_NotAModel(), run_dir / "models" / "evil.skops")
    meta.update(file="evil.skops", sha256=bundle._sha256(run_dir / "models" / "evil.skops"))
    (run_dir / "models" / "evil.json").write_text(json.dumps(meta))
    with pytest.raises(bundle.UntrustedModelError, match=r"outside the trusted list.*_NotAModel"):
        bundle.load_model(run_dir / "models" / "evil.json")


class _NotAModel:
    """An arbitrary class: loading it from a model file must be refused."""

    def __init__(self) -> None:
        self.x = 1


def test_cli_predict(saved, tmp_path):
    out = tmp_path / "cli.csv"
    res = subprocess.run([sys.executable, "-m", "vcfnb.cli", "predict",
                          "--run", str(saved["run"].out_dir), "--cohort",
                          str(saved["cohort_dir"]), "--out", str(out),
                          "--cache", str(saved["cache"]), "--model", "LR", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = pd.read_csv(out, dtype={"patient_id": str})
    assert list(got.columns) == bundle.PREDICT_COLUMNS and set(got["model"]) == {"LR"}
    rec = saved["run"].predictions_table
    r = rec[(rec["model"] == "LR") & (rec["split"] == "test")].set_index("patient_id")["score"]
    np.testing.assert_allclose(got.set_index("patient_id").loc[r.index, "score"], r,
                               rtol=0, atol=1e-10)
    bad = subprocess.run([sys.executable, "-m", "vcfnb.cli", "predict", "--run",
                          str(tmp_path), "--cohort", str(saved["cohort_dir"]), "--out",
                          str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no saved model" in bad.stderr


def test_patient_table_recipes():
    long = pd.DataFrame({"patient_id": ["a", "a", "b", "b", "a", "b"],
                         "roi": ["L1", "L2", "L1", "L2", "L1", "L1"],
                         "sequence": ["T1"] * 4 + ["T2"] * 2, "reader": "1",
                         "f": [1.0, 3.0, 5.0, 7.0, 10.0, 20.0]})
    mean = F.patient_table(long, {"sequences": ["T2", "T1"], "prefix": {"T1": "T1WI"}})
    assert list(mean.columns) == ["T2_f", "T1WI_f"] and mean["T1WI_f"].tolist() == [2.0, 6.0]
    block = F.patient_table(long, {"sequences": ["T1"], "rois": ["L2"], "aggregate": "block"})
    assert list(block.columns) == ["T1_L2_f"]
    assert F.recipe_mismatch(long, {"sequences": ["T1", "T2"]}) == [
        "patient a lacks T2/L2", "patient b lacks T2/L2"]
    with pytest.raises(ValueError, match="unknown key"):
        F.check_recipe({"sequences": ["T1"], "agg": "mean"})


def test_case_panels_of_the_run(saved):
    """Correctly and incorrectly classified test patients, every sequence, ROI outlined."""
    from vcfnb import montage, plots

    run = saved["run"]
    cut = run.models["LR"]["test"]["cutoff"]
    panels = montage.case_panels(run.cohort.rois, run.predictions_table, "LR", "test", cut,
                                 sequences=["T1", "T2", "FS-T2"])
    kinds = panels["cases"]["kind"].tolist()
    assert kinds == [k for k in montage.OUTCOME_KINDS if k in kinds] and len(kinds) >= 2
    assert panels["ncols"] == 3 and len(panels["images"]) == 3 * len(kinds)
    assert panels["titles"][0].startswith(f"{panels['cases']['patient_id'].iloc[0]} T1 — "
                                          f"{kinds[0]} (score ")
    assert all(m.any() and m.shape == i.shape for i, m in zip(panels["images"],
                                                                  panels["masks"]))
    axes = plots.plot_case_montage(panels["images"], panels["masks"], panels["titles"],
                                   ncols=panels["ncols"])
    assert len(axes) == len(panels["images"])
