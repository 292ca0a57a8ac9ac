"""The generic radiomics_study notebook through papermill (smoke size): its defaults, a user
cohort whose `split` column must be honoured, and a repeated-CV / per-ROI-rows / single-reader
configuration; plus the params files against the notebook's parameters."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from vcfnb import contract, io, metrics, runner, synth

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "radiomics_study.ipynb"
PARAMS = ROOT / "params" / "radiomics_study"
COMMON = ("cohort_dir", "outcome", "require_outcome", "mask_grid", "geometry_tol", "seed",
          "n_jobs", "synthetic_size", "synthetic_signal", "out_dir", "cache_dir")


def _run(tmp_path, cache, **params):
    import papermill as pm

    out = tmp_path / "report"
    runner.validate_params(NB, params)
    pm.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), kernel_name="vcfnb",
                        parameters={**params, "out_dir": str(out), "cache_dir": str(cache)},
                        cwd=str(NB.parent), progress_bar=False)
    return out, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One feature cache for this module's runs (they share the osteoporosis smoke images)."""
    return tmp_path_factory.mktemp("radiomics_study_cache")


def test_parameters_and_params_files():
    """The common parameters exist with the documented defaults; every params file is valid
    and its contract parses; the defaults run the smoke-size built-in cohort."""
    params = runner.notebook_parameters(NB)
    for name in COMMON:
        assert name in params, f"radiomics_study lacks common parameter {name}"
    assert params["synthetic_size"][1].strip("'\"") == "smoke"
    assert (PARAMS / "smoke.yaml").is_file()
    for pf in sorted(PARAMS.glob("*.yaml")):
        given = io.load_yaml(pf)
        given.pop(runner.SHARED_DATA_MARKER, None)
        runner.validate_params(NB, given, source=str(pf))
        if "requirements" in given:
            contract.Requirements.from_dict(given["requirements"])


@pytest.mark.slow
def test_smoke_defaults(tmp_path, cache):
    """Defaults: simulated osteoporosis cohort, hold-out with the external cohort; predictions
    table with train_oof/test/external for every model; schema-valid metrics.json whose
    permutation result is the headline model's reported test AUC."""
    out, m = _run(tmp_path, cache)
    assert metrics.validate(m) == []
    assert m["status"] == "ok" and m["simulated"] is True
    pred = pd.read_csv(out / "tables" / "predictions.csv")
    for model in ("LR", "Radscore"):
        assert set(pred.loc[pred.model == model, "split"]) == {"train_oof", "test", "external"}
    assert m["main_models"] == ["LR"]
    perm = m["permutation"]["LR"]
    assert perm["split"] == "test"
    assert perm["observed_auc"] == pytest.approx(m["models"]["LR"]["test"]["auc"], abs=1e-6)
    # the label-free ICC filter says it used every patient with both readers
    assert any("label-free" in n and "all splits" in n for n in m["notes"])
    # the out-of-fold training predictions chose the cut-off applied to the test split
    assert m["models"]["LR"]["test"]["cutoff_split"] == "train_oof"
    # both fitted models are saved for `vcfnb predict`, with the feature recipe of the run
    for model in ("LR", "Radscore"):
        meta = json.loads((out / "models" / f"{model}.json").read_text(encoding="utf-8"))
        assert meta["feature_recipe"]["aggregate"] == "mean"
        assert meta["feature_recipe"]["sequences"] == ["T1", "T2"]


def _osteoporosis_smoke() -> Path:
    folder = ROOT / "data" / "cohorts" / "osteoporosis-smoke-seed0-signal1"
    synth.make_cohort("osteoporosis", folder, size="smoke", seed=0, signal=1.0)
    return folder


@pytest.mark.slow
def test_given_split_is_honoured(tmp_path, cache):
    """A user cohort (a new folder naming the built-in images) whose split column puts chosen
    patients in test: exactly those are the test rows; one reader → the ICC step is skipped."""
    src = _osteoporosis_smoke()
    cases = pd.read_csv(src / "cases.csv", dtype={"patient_id": str})
    rois = pd.read_csv(src / "rois.csv", dtype={"patient_id": str})
    internal = cases[cases["split"].fillna("") != "external"].copy()
    test_ids = sorted(internal.groupby("outcome")["patient_id"].apply(
        lambda s: s.iloc[1::3]).explode())  # every third patient of each class, not the draw
    internal["split"] = ["test" if p in test_ids else "train" for p in internal["patient_id"]]
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    internal.drop(columns="split").assign(split=internal["split"]).to_csv(
        cohort / "cases.csv", index=False)
    r = rois[rois.patient_id.isin(internal.patient_id) & (rois.reader.astype(str) == "1")].copy()
    r["image"] = [str((src / p).resolve()) for p in r["image"]]
    r["mask"] = [str((src / p).resolve()) for p in r["mask"]]
    r.to_csv(cohort / "rois.csv", index=False)
    out, m = _run(tmp_path, cache, cohort_dir=str(cohort), readers=["1"], n_permutations=2)
    assert metrics.validate(m) == []
    assert m["simulated"] is False
    pred = pd.read_csv(out / "tables" / "predictions.csv", dtype={"patient_id": str})
    for model in ("LR", "Radscore"):
        got = pred[(pred.model == model) & (pred.split == "test")]["patient_id"]
        assert sorted(got) == test_ids
        assert set(pred[(pred.model == model) & (pred.split == "train_oof")]["patient_id"]) == \
            set(internal.patient_id) - set(test_ids)
    assert "external" not in set(pred.split)
    assert any(n.startswith("Single-reader mode") for n in m["notes"])


@pytest.mark.slow
def test_repeated_cv_per_roi_rows(tmp_path, cache):
    """Design cv, 2 repeats, one row per ROI (patient-grouped folds, scores averaged per
    patient), an RBF SVC after forward selection: one prediction per patient and repeat, the
    split column ignored (and said so), the permutation test on the pooled CV AUC."""
    out, m = _run(tmp_path, cache, design="cv", cv_folds=3, cv_repeats=2,
                  roi_to_patient="per-roi-rows", readers=["1"], ci_method="nadeau-bengio",
                  selection=["zscore", ["sfs", {"n_splits": 3, "n_repeats": 1,
                                                "max_features": 3}]],
                  models={"SVC": {"model": "SVC", "tune": False},
                          "LR": {"model": "LR", "selection": ["zscore", ["mrmr", {"k": 5}]]}},
                  n_permutations=2)
    assert metrics.validate(m) == []
    pred = pd.read_csv(out / "tables" / "predictions.csv", dtype={"patient_id": str})
    svc = pred[pred.model == "SVC"]
    assert set(svc.split) == {"cv"} and set(svc.score_kind) == {"decision"}
    assert svc.groupby("repeat").patient_id.nunique().tolist() == [56, 56]
    assert not svc.duplicated(["repeat", "patient_id"]).any()
    assert m["models"]["SVC"]["cv"]["ci_method"] == "nadeau-bengio"
    assert m["permutation"]["SVC"]["split"] == "cv"
    assert any("split column is ignored" in n for n in m["notes"])


def _run_params(tmp_path: Path, cache: Path, study: str, params_file: Path, name: str) -> dict:
    import papermill as pm

    nb = ROOT / "notebooks" / f"{study}.ipynb"
    params = io.load_yaml(params_file)
    runner.validate_params(nb, params)
    out = tmp_path / name
    pm.execute_notebook(str(nb), str(tmp_path / f"{name}.ipynb"), kernel_name="vcfnb",
                        parameters={**params, "out_dir": str(out), "cache_dir": str(cache)},
                        cwd=str(nb.parent), progress_bar=False)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_equivalent_to_osteoporosis_mri(tmp_path, cache):
    """Seed 002's core pipeline as a params file gives osteoporosis_mri's held-out AUCs (test
    and external, every radscore model) on the same built-in cohort with the same seed."""
    dedicated = _run_params(tmp_path, cache, "osteoporosis_mri",
                            ROOT / "params" / "osteoporosis_mri" / "smoke.yaml", "dedicated")
    generic = _run_params(tmp_path, cache, "radiomics_study", PARAMS / "osteoporosis_core.yaml",
                          "generic")
    assert metrics.validate(generic) == []
    for model in ("T1WI", "T2WI", "T1WI+T2WI"):
        for split in ("test", "external"):
            want = dedicated["models"][model][split]["auc"]
            assert want is not None
            assert generic["models"][model][split]["auc"] == pytest.approx(want, abs=1e-6), \
                (model, split)


@pytest.mark.slow
def test_equivalent_to_metastasis_lytic_blastic(tmp_path, cache):
    """Seed 004's core pipeline (SFS with an RBF SVM inside 10-fold CV) as a params file gives
    metastasis_lytic_blastic's cross-validated AUC on the same built-in cohort and seed."""
    dedicated = _run_params(tmp_path, cache, "metastasis_lytic_blastic",
                            ROOT / "params" / "metastasis_lytic_blastic" / "smoke.yaml",
                            "dedicated")
    generic = _run_params(tmp_path, cache, "radiomics_study", PARAMS / "metastasis_core.yaml",
                          "generic")
    assert metrics.validate(generic) == []
    want = dedicated["models"]["radiomics"]["cv"]["auc"]
    assert want is not None
    assert generic["models"]["radiomics"]["cv"]["auc"] == pytest.approx(want, abs=1e-6)
