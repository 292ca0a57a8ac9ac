"""The generic radiomics_study notebook through papermill (smoke size): its defaults, a user
cohort whose `split` column must be honoured, and a repeated-CV / per-ROI-rows / single-reader
configuration; plus the params files against the notebook's parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vcfnb import contract, io, metrics, runner, sources, synth
from vcfnb import models as vm

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "radiomics_study.ipynb"
PARAMS = ROOT / "params" / "radiomics_study"
COMMON = ("cohort_dir", "outcome", "require_outcome", "mask_grid", "geometry_tol", "seed",
          "n_jobs", "synthetic_size", "synthetic_signal", "out_dir", "cache_dir")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One feature cache for this module's runs (they share the osteoporosis smoke images)."""
    return tmp_path_factory.mktemp("radiomics_study_cache")


@pytest.fixture
def run(tmp_path, cache, run_study_notebook):
    """``run(**params)``: the notebook into ``tmp_path`` (``report/``, ``out.ipynb``) ->
    (report folder, metrics)."""
    return lambda **params: run_study_notebook(NB, tmp_path, cache, params)


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


def test_check_cohort_reads_the_contract_from_the_params_file():
    """`vcfnb check-cohort --study radiomics_study --params P` checks the params' own contract."""
    pf = PARAMS / "metastasis_core.yaml"
    unmet, _ = runner.check_cohort(ROOT, "radiomics_study", pf)
    assert unmet.empty
    req = {**io.load_yaml(pf)["requirements"], "rois": ["L1"]}
    unmet, _ = runner.check_cohort(ROOT, "radiomics_study", pf, extra={"requirements": req})
    assert unmet["problem"].str.contains("no ROI named 'L1'").any()


def _toy(n=60, seed=0):
    g = np.random.default_rng(seed)
    X = pd.DataFrame(g.normal(size=(n, 5)), columns=[f"T1_f{i}" for i in range(5)],
                     index=[f"p{i:02d}" for i in range(n)])
    y = pd.Series((X["T1_f0"] + g.normal(scale=0.5, size=n) > 0).astype(int), index=X.index)
    return X, y


def test_study_split_honours_a_given_split_and_draws_otherwise():
    cases = pd.DataFrame({"patient_id": [f"p{i}" for i in range(12)], "outcome": [0, 1] * 6,
                          "split": ["train"] * 8 + ["test"] * 2 + ["external"] * 2})
    s = vm.study_split(cases)
    assert s.tolist() == cases["split"].tolist() and list(s.index) == list(cases.patient_id)
    drawn = vm.study_split(cases.assign(split=[""] * 10 + ["external"] * 2), test_size=0.3,
                           random_state=1)
    assert drawn.iloc[-2:].tolist() == ["external"] * 2
    assert drawn.iloc[:10].value_counts().to_dict() == {"train": 7, "test": 3}
    assert set(vm.study_split(cases, design="external")) == {"train", "external"}
    assert set(vm.study_split(cases, design="cv")) == {"cv"}
    with pytest.raises(ValueError, match="some internal patients but not all"):
        vm.study_split(cases.assign(split=["train"] * 9 + [""] + ["external"] * 2))
    with pytest.raises(ValueError, match="design must be"):
        vm.study_split(cases, design="bootstrap")


def test_study_models_build_the_menu_and_reject_typos():
    est = vm.study_models({"LR": "LR", "Radscore": {"model": "radscore", "selection": []},
                           "SVC": {"model": "SVC", "tune": False}},
                          selection=["variance", "zscore", ["mrmr", {"k": 3}]], tune=True,
                          random_state=lambda key: len(key))
    assert [n for n, _ in est["LR"].steps] == ["variance", "zscore", "mrmr", "tuned_lr"]
    assert type(est["Radscore"]).__name__ == "RadscoreModel"
    assert est["Radscore"].random_state == len("lasso")  # seeded from its own key
    assert vm.score_kind(est["SVC"]) == "decision" and vm.score_kind(est["LR"]) == "probability"
    with pytest.raises(ValueError, match="unknown selection step 'lasoo'"):
        vm.study_models({"LR": "LR"}, selection=["lasoo"])
    with pytest.raises(ValueError, match="unknown model 'XGB'"):
        vm.study_models({"x": "XGB"})


def test_holdout_predictions_average_rows_per_patient_and_link_the_radscore():
    X, y = _toy()
    rows = pd.concat([X, X + 0.01], keys=["L1", "L2"]).swaplevel().sort_index()
    yr = y.reindex(rows.index.get_level_values(0)).to_numpy()
    groups = rows.index.get_level_values(0).to_numpy()
    split = np.where(pd.Index(groups).isin(X.index[:40]), "train", "test")
    est = vm.study_pipeline([], ["radscore", {"cv": 3, "n_lambdas": 10}], random_state=0)
    fitted, p = vm.holdout_predictions(est, rows, yr, split, cv=3, rng=0, groups=groups)
    assert p.groupby("split").patient_id.nunique().to_dict() == {"test": 20, "train_oof": 40}
    assert not p.duplicated(["split", "patient_id"]).any()
    assert set(p.score_kind) == {"probability"} and p.score.between(0, 1).all()
    # the permutation evaluator reproduces the reported test AUC exactly
    from sklearn.metrics import roc_auc_score

    test = p[p.split == "test"]
    auc = roc_auc_score(test.y_true, test.score)
    tr = split == "train"
    ev = vm.holdout_evaluator(rows[~tr], y[test.patient_id], cv=3, rng=0, groups=groups[tr],
                              test_groups=groups[~tr])
    assert ev(est, rows[tr], yr[tr]) == pytest.approx(auc, abs=1e-12)


def test_cv_splitters_first_repeat_is_the_single_splitter():
    X, y = _toy()
    a = vm.cv_splitters(5, 3, rng=np.random.default_rng(7))
    b = vm.cv_splitter(5, rng=np.random.default_rng(7))
    first = [t.tolist() for _, t in a[0].split(X, y)]
    assert first == [t.tolist() for _, t in b.split(X, y)]
    assert first != [t.tolist() for _, t in a[1].split(X, y)]
    p = vm.cv_predictions(vm.study_pipeline(["zscore"], "LR", random_state=0), X, y, splitters=a)
    assert p.groupby("repeat").size().tolist() == [60, 60, 60]


@pytest.mark.slow
def test_smoke_defaults(tmp_path, run):
    """Defaults: simulated osteoporosis cohort, hold-out with the external cohort; predictions
    table with train_oof/test/external for every model; schema-valid metrics.json whose
    permutation result is the headline model's reported test AUC."""
    out, m = run()
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
    # where the held-out calibration departs, by class, for the headline model (issue 18)
    by_class = pd.read_csv(out / "tables" / "calibration_by_class.csv")
    assert set(by_class.split) == {"test", "external"} and (by_class.n > 0).all()
    text = (out.parent / "out.ipynb").read_text(encoding="utf-8")
    assert "LR, test: mean predicted probability" in text
    assert "LR, external: mean predicted probability" in text


def _osteoporosis_smoke() -> Path:
    folder = sources.data_root(ROOT) / "cohorts" / "osteoporosis-smoke-seed0-signal1"
    synth.make_cohort("osteoporosis", folder, size="smoke", seed=0, signal=1.0)
    return folder


@pytest.mark.slow
def test_given_split_is_honoured(tmp_path, run):
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
    out, m = run(cohort_dir=str(cohort), readers=["1"], n_permutations=2, recovery=True,
                 recovery_draws=1, recovery_permutations=3)
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
    recovery = pd.read_csv(out / "tables" / "recovery_check.csv")
    assert sorted(recovery["d"]) == [0.0, 1.0] and set(recovery["n_permutations"]) == {3}


@pytest.mark.slow
def test_repeated_cv_per_roi_rows(tmp_path, run):
    """Design cv, 2 repeats, one row per ROI (patient-grouped folds, scores averaged per
    patient), an RBF SVC after forward selection: one prediction per patient and repeat, the
    split column ignored (and said so), the permutation test on the pooled CV AUC."""
    out, m = run(design="cv", cv_folds=3, cv_repeats=2,
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


@pytest.fixture
def run_params(tmp_path, cache, run_study_notebook):
    """``run_params(study, params_file, name, **extra)``: a study notebook with a params file
    (+ ``extra``) into ``tmp_path/name`` -> metrics."""
    def run(study: str, params_file: Path, name: str, **extra) -> dict:
        nb = ROOT / "notebooks" / f"{study}.ipynb"
        return run_study_notebook(nb, tmp_path, cache, {**io.load_yaml(params_file), **extra},
                                  name=name, executed=f"{name}.ipynb")[1]
    return run


@pytest.mark.slow
def test_equivalent_to_osteoporosis_mri(run_params):
    """Seed 002's core pipeline as a params file gives osteoporosis_mri's held-out AUCs (test
    and external, every radscore model) on the same built-in cohort with the same seed."""
    # fewer permutations than the params files ask: they do not change the reported AUCs
    # the generic notebook scores new patients with the full-training model: so does this run
    # (osteoporosis_mri's default `test_scores: auto` may choose the fold mean on smoke data)
    dedicated = run_params("osteoporosis_mri", ROOT / "params" / "osteoporosis_mri" / "smoke.yaml",
                           "dedicated", n_permutations=2, test_scores="full")
    generic = run_params("radiomics_study", PARAMS / "osteoporosis_core.yaml", "generic",
                         n_permutations=2)
    assert metrics.validate(generic) == []
    for model in ("T1WI", "T2WI", "T1WI+T2WI"):
        for split in ("test", "external"):
            want = dedicated["models"][model][split]["auc"]
            assert want is not None
            assert generic["models"][model][split]["auc"] == pytest.approx(want, abs=1e-6), \
                (model, split)


@pytest.mark.slow
def test_equivalent_to_metastasis_lytic_blastic(tmp_path, run_params):
    """Seed 004's core pipeline (SFS with an RBF SVM inside 10-fold CV) as a params file gives
    metastasis_lytic_blastic's cross-validated AUC on the same built-in cohort and seed."""
    # fewer permutations than the params files ask: they do not change the reported AUC, and
    # every permutation reruns the forward selection in every fold
    dedicated = run_params("metastasis_lytic_blastic",
                           ROOT / "params" / "metastasis_lytic_blastic" / "smoke.yaml",
                           "dedicated", n_permutations=2)
    generic = run_params("radiomics_study", PARAMS / "metastasis_core.yaml", "generic",
                         n_permutations=2)
    assert metrics.validate(generic) == []
    want = dedicated["models"]["radiomics"]["cv"]["auc"]
    assert want is not None
    assert generic["models"]["radiomics"]["cv"]["auc"] == pytest.approx(want, abs=1e-6)
    # the same out-of-fold decision values, lesion by lesion
    a = pd.read_csv(tmp_path / "dedicated" / "tables" / "predictions.csv", dtype={"patient_id": str})
    b = pd.read_csv(tmp_path / "generic" / "tables" / "predictions.csv", dtype={"patient_id": str})
    a = a[(a.model == "radiomics") & (a.split == "cv")].set_index("patient_id").sort_index()
    b = b[(b.model == "radiomics") & (b.split == "cv")].set_index("patient_id").sort_index()
    assert list(a.index) == list(b.index)
    assert (a["score"] - b["score"]).abs().max() < 1e-6
