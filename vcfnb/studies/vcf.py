"""Study glue for ``vcf_benign_malignant`` (seeds 000 and 001): benign vs malignant VCF on MRI.

Two arms of one notebook:

* **Arm A** (seed 000, T2WI radiomics): reader ICC > 0.75 → 7:3 stratified split → random
  oversampling → z-score → |r| > 0.99 redundancy filter → LASSO → RFE with a linear SVM whose
  feature count is chosen by 5-fold CV AUC → linear SVM (:func:`arm_a_pipeline`).
* **Arm B** (seed 001, 2.5D deep-learning radiomics nomogram): N4 (:func:`n4_rois`), 1 mm
  resampling and normalisation (pyradiomics settings, :func:`settings_b`), handcrafted features,
  ICC ≥ 0.85 on the re-segmented subset, z-score → t-test/Mann-Whitney → |r| > 0.9 → LASSO
  10-fold (:func:`selection_b`), eight classifiers (:func:`classifier_table`), 2.5D ResNet50
  features (:mod:`vcfnb.deep`), DLR fusion and score, clinical univariate/multivariable
  logistic regression (:func:`clinical_analysis`), the DLRN nomogram (:func:`fit_dlrn`), and
  the comparison statistics (:func:`comparison`).

Everything label-dependent is fitted on the training patients only. Generic steps live in
:mod:`vcfnb.features`, :mod:`vcfnb.reliability`, :mod:`vcfnb.selection`, :mod:`vcfnb.models`,
:mod:`vcfnb.stats` and :mod:`vcfnb.deep`; this module only assembles them the way the two papers
did and shapes their tables.

References
----------
Seed 000: Application value of MRI radiomics in differential diagnosis of osteoporotic and
malignant neoplastic vertebral compression fractures. Int J Radiat Res 2024;22(4).
Seed 001: Liang W et al. MRI-based 2.5D deep learning radiomics nomogram for the differentiation
of benign versus malignant vertebral compression fractures. Front Oncol 2025;15:1603672.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from vcfnb import features as feat
from vcfnb import io, models, preprocess, reliability, selection, stats

__all__ = [
    "SEMANTIC", "CLINICAL", "SETTINGS_A", "settings_a", "settings_b", "compare_models",
    "roc_by_split", "record_permutation", "arm", "table1_arm_a", "table1_arm_b",
    "extract", "feature_counts", "reader_icc", "split", "arm_a_pipeline", "arm_a_outputs",
    "scores", "performance", "record", "n4_rois", "selection_b", "fit_selection", "step_counts",
    "reader1",
    "classifier_table", "fuse", "dlr_score_formula", "clinical_analysis", "clinical_design",
    "fit_dlrn", "stacked_dlr_score", "comparison", "morphometric_wedge", "wedge_agreement",
    "permutation",
    "formatted", "gradcam_cases",
]

SEMANTIC = ["wedge_deformity", "band_edema", "paravertebral_mass", "diffuse_signal",
            "posterior_involvement"]
#: clinical predictors of seed 001 (location is categorical; lumbar is the reference level)
CLINICAL = ["age", "sex", "location", *SEMANTIC]
_CLASSES = ["shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]

#: arm A (seed 000): 3D-Slicer/pyradiomics defaults on the native T2WI grid, original + the 8
#: wavelet decompositions (the paper's feature names ``Mean.7``, ``SmallAreaEmphasis.6`` number
#: 9 image types)
def settings_a(image_types: Sequence[str] = ("Original", "Wavelet"), *, bin_width: float = 25.0
               ) -> dict:
    """pyradiomics settings of arm A (seed 000): native grid, fixed bin width, ``image_types``
    (default: original + the 8 wavelet decompositions, :data:`SETTINGS_A`)."""
    s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SETTINGS_A.items()}
    s["setting"] = {**SETTINGS_A["setting"], "binWidth": float(bin_width)}
    s["imageType"] = {t: {} for t in image_types}
    return s


SETTINGS_A: dict = {
    "setting": {"binWidth": 25, "label": 1, "correctMask": True},
    "imageType": {"Original": {}, "Wavelet": {}},
    "featureClass": {c: [] for c in _CLASSES},
    "vcfnb": {"study": "vcf_benign_malignant arm A (seed 000)"},
}


def settings_b(image_types: Sequence[str] = ("Original", "Wavelet", "LoG", "Square", "SquareRoot",
                                             "Logarithm", "Exponential", "Gradient"),
               *, log_sigma: Sequence[float] = (1.0, 2.0, 3.0),
               spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), interpolator: str = "sitkBSpline",
               bin_width: float = 10.0, normalize_scale: float = 100.0) -> dict:
    """pyradiomics settings of arm B (seed 001): resampling, normalisation, image types.

    Resampling to ``spacing_mm`` (x, y, z of the image grid; seed 001: 1 × 1 × 1 mm with
    nearest-neighbour interpolation — ``interpolator`` is a parameter because nearest neighbour
    on an upsampled grid replicates voxels), pyradiomics normalisation (z-score ×
    ``normalize_scale``) and fixed bin width. ``LBP2D``/``LBP3D`` are accepted but need
    scikit-image / trimesh (not installed; LBP3D also needs ``scipy.special.sph_harm``, removed in
    SciPy 1.15): pyradiomics then silently yields no image, which :func:`feature_counts` shows.

    Examples
    --------
    >>> sorted(settings_b(["Original", "LoG"])["imageType"])
    ['LoG', 'Original']
    """
    types: dict[str, dict] = {}
    for t in image_types:
        types[t] = {"sigma": [float(s) for s in log_sigma]} if t == "LoG" else {}
    return {
        "setting": {"normalize": True, "normalizeScale": float(normalize_scale),
                    "binWidth": float(bin_width), "label": 1, "correctMask": True,
                    "resampledPixelSpacing": [float(s) for s in spacing_mm],
                    "interpolator": interpolator, "padDistance": 5},
        "imageType": types,
        "featureClass": {c: [] for c in _CLASSES},
        "vcfnb": {"study": "vcf_benign_malignant arm B (seed 001)"},
    }


# --------------------------------------------------------------------------------------------
# cohort pieces and baseline tables
# --------------------------------------------------------------------------------------------
def arm(cohort, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cases, rois)`` of one arm (column ``arm`` of ``cases.csv``; all rows when absent)."""
    cases = cohort.cases
    if "arm" in cases:
        cases = cases[cases["arm"].astype(str) == str(name)]
    cases = cases.reset_index(drop=True)
    rois = cohort.rois[cohort.rois.patient_id.isin(set(cases.patient_id))].reset_index(drop=True)
    if cases.empty:
        raise ValueError(f"arm {name!r}: no cases in the cohort (column 'arm' has "
                         f"{sorted(cohort.cases.get('arm', pd.Series(dtype=str)).unique())})")
    return cases, rois


def _group(cases: pd.DataFrame, outcome: str) -> pd.Series:
    return cases[outcome].map({1: "malignant", 0: "benign"})


def table1_arm_a(cases: pd.DataFrame, *, outcome: str = "outcome") -> pd.DataFrame:
    """Seed 000 table 1: age, sex, tumour type and fracture site by group."""
    d = cases.assign(group=_group(cases, outcome))
    cols = [c for c in ("age", "sex", "tumour_type", "location") if c in d]
    return stats.baseline_table(d, "group", cols)


def table1_arm_b(cases: pd.DataFrame, split: pd.Series, *, outcome: str = "outcome"
                 ) -> pd.DataFrame:
    """Seed 001 table 1: clinical and MRI features in the training vs testing cohorts."""
    cohort = split.reindex(cases.patient_id.astype(str)).map({"train": "training",
                                                             "test": "testing"})
    d = cases.assign(cohort=cohort.to_numpy())
    cols = [c for c in CLINICAL if c in d]
    semantic = [c for c in SEMANTIC if c in d]
    d[semantic] = d[semantic].replace({0: "absent", 1: "present"})
    return stats.baseline_table(d, "cohort", cols, categorical=semantic)


# --------------------------------------------------------------------------------------------
# features and reliability
# --------------------------------------------------------------------------------------------
def extract(rois: pd.DataFrame, settings: Mapping | str, *, n_jobs: int = 2,
            cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """:func:`vcfnb.features.extract` for every ROI row; raises naming the failed ROIs."""
    table = feat.extract(rois, settings, n_jobs=n_jobs, cache_dir=cache_dir, progress=False)
    fails = feat.failures_table(table)
    if not fails.empty:
        bad = fails.groupby(["patient_id", "mask"]).reason.first().head(5)
        raise RuntimeError(f"feature extraction failed for {len(fails)} ROI/image-type pairs, "
                           f"e.g. {bad.to_dict()}")
    return table


def feature_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Number of feature columns per image type and feature class (+ a total row)."""
    cols = [c for c in table.columns if c not in feat.ID_COLUMNS and c.count("_") >= 2]
    parts = pd.DataFrame([c.split("_", 2)[:2] for c in cols], columns=["image_type", "class"])
    counts = parts.value_counts().rename("n").reset_index()
    piv = counts.pivot_table(index="image_type", columns="class", values="n", fill_value=0)
    piv["total"] = piv.sum(axis=1)
    piv.loc["all"] = piv.sum(axis=0)
    return piv.reset_index()


def _feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in feat.ID_COLUMNS
            and pd.api.types.is_numeric_dtype(table[c])]


def reader_icc(table: pd.DataFrame, *, icc: str = "ICC2", threshold: float = 0.75,
               strict: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Per-feature ICC between reader 1 and reader 2 on the patients both outlined.

    Returns ``(icc_table, kept)``: the :func:`vcfnb.reliability.feature_icc` table (with a
    ``kept`` column) and the features with ICC ``> threshold`` (``strict``, seed 000) or
    ``>= threshold`` (seed 001). Constant/undefined features get NaN and are never kept.
    """
    cols = _feature_columns(table)
    r1 = table[table.reader.astype(str) == "1"].set_index("patient_id")
    r2 = table[table.reader.astype(str) == "2"].set_index("patient_id")
    both = r1.index.intersection(r2.index)
    if len(both) < 3:
        raise ValueError(f"ICC needs >= 3 patients outlined by both readers, found {len(both)}")
    tab = reliability.feature_icc(r1.loc[both, cols], r2.loc[both, cols], icc=icc)
    ok = tab["icc"] > threshold if strict else tab["icc"] >= threshold
    tab = tab.assign(kept=ok.fillna(False).to_numpy())
    return tab, tab.loc[tab.kept, "feature"].tolist()


def reader1(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Reader-1 feature rows (index ``patient_id``) restricted to ``columns``."""
    return table[table.reader.astype(str) == "1"].set_index("patient_id")[list(columns)]


def split(cases: pd.DataFrame, *, test_size: float = 0.3, rng: int = 0,
          outcome: str = "outcome") -> pd.Series:
    """7:3 stratified split by patient → Series ``patient_id → "train"/"test"``."""
    train, test = models.split_by_patient(cases, outcome, test_size=test_size, rng=rng)
    s = pd.Series("train", index=cases.patient_id.astype(str), name="split")
    s[test.patient_id.astype(str)] = "test"
    return s


# --------------------------------------------------------------------------------------------
# arm A
# --------------------------------------------------------------------------------------------
def arm_a_pipeline(*, corr_threshold: float = 0.99, lasso_cv: int = 5, rfe_cv: int = 5,
                   svm_c: float = 1.0, rng: int = 0):
    """Seed 000's chain as one leakage-free pipeline.

    oversampling (training rows only) → z-score → |r| > ``corr_threshold`` filter → LASSO
    (L1 logistic, lambda by ``lasso_cv``-fold CV AUC) → RFE with a linear SVM (feature count by
    ``rfe_cv``-fold CV AUC) → linear SVM (Platt-scaled probabilities are not needed for AUC;
    the decision value is the score).
    """
    return models.make_radiomics_pipeline([
        "oversample", "zscore", ("correlation", {"threshold": corr_threshold}),
        ("lasso", {"cv": lasso_cv, "rule": "min", "min_features": 2}),
        ("rfe", {"cv": rfe_cv, "C": svm_c}),
        SVC(kernel="linear", C=svm_c)], rng=rng)


def arm_a_outputs(pipe) -> dict[str, pd.DataFrame]:
    """Tables behind seed 000's figures 2-4 and table 3 from a fitted :func:`arm_a_pipeline`.

    ``lasso_path`` (fig 2), ``lasso_cv``, ``rfe_cv`` (fig 3: columns ``n_features, auc, sd``)
    and ``coefficients`` (fig 4 / table 3: ``feature, coef`` of the final linear SVM on the
    z-scored features, intercept first).
    """
    lasso, rfe, svm = pipe["lasso"], pipe["rfe"], pipe[-1]
    coef = pd.DataFrame({"feature": ["intercept", *rfe.get_feature_names_out()],
                         "coef": [float(svm.intercept_[0]), *np.ravel(svm.coef_)]})
    cv = rfe.cv_results_.rename(columns={"mean_score": "auc", "sd_score": "sd"})
    return {"lasso_path": lasso.path_, "lasso_cv": lasso.cv_results_, "rfe_cv": cv,
            "coefficients": coef}


def scores(model, X: pd.DataFrame) -> pd.Series:
    """Positive-class score of a fitted pipeline/classifier (probability or decision value)."""
    if hasattr(model, "predict_proba"):
        try:
            s = np.asarray(model.predict_proba(X))[:, 1]
        except AttributeError:
            s = np.asarray(model.decision_function(X)).ravel()
    else:
        s = np.asarray(model.decision_function(X)).ravel()
    return pd.Series(s, index=X.index, name="score")


def performance(name: str, y: pd.Series, score: pd.Series, split_: pd.Series, *,
                method: str = "delong", n_boot: int = 1000, rng: int = 0) -> pd.DataFrame:
    """:func:`vcfnb.stats.model_report` for train and test (Youden cutoff from train)."""
    tr = split_.reindex(score.index) == "train"
    yy = y.reindex(score.index)
    return stats.model_report(yy[tr], score[tr], yy[~tr], score[~tr], model=name,
                              method=method, n_boot=n_boot, rng=rng)


def record(run, table: pd.DataFrame) -> pd.DataFrame:
    """Record every row of a :func:`performance` table in ``metrics.json`` and return it."""
    for r in table.itertuples(index=False):
        run.metric(str(r.model), str(r.split), auc=r.auc, ci_low=r.auc_ci_low,
                   ci_high=r.auc_ci_high, n=r.n, p_value=float(r.auc_p_value),
                   accuracy=float(r.accuracy), sensitivity=float(r.sensitivity),
                   specificity=float(r.specificity), ppv=float(r.ppv), npv=float(r.npv))
    return table


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """A performance table shaped like the papers' tables 2-5."""
    out = pd.DataFrame({
        "Model": table["model"] + "-" + table["split"].map({"train": "training",
                                                             "test": "testing"}),
        "AUC": table["auc"].round(3),
        "95% CI": [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(table.auc_ci_low, table.auc_ci_high)],
        "Accuracy": table["accuracy"].round(3), "Sensitivity": table["sensitivity"].round(3),
        "Specificity": table["specificity"].round(3), "PPV": table["ppv"].round(3),
        "NPV": table["npv"].round(3),
        "P": [("<0.001" if p < 0.001 else f"{p:.3f}") for p in table["auc_p_value"]],
    })
    order = np.argsort(table["split"].map({"train": 0, "test": 1}).to_numpy(), kind="stable")
    return out.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# arm B: preprocessing
# --------------------------------------------------------------------------------------------
def _digest(path: str) -> str:
    return feat.file_digest(path)


def _n4_one(image: str, masks: list[str], out: str, shrink: int, iterations: list[int],
            margin_mm: float) -> dict:
    t0 = time.perf_counter()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one scan per worker, no oversubscription
    img = io.read_image(image)
    msk = [io.read_image(m) for m in masks]
    crop, crop_masks = preprocess.crop_to_rois(img, msk, margin_mm=margin_mm)
    corrected = preprocess.n4_correct(crop, shrink_factor=shrink, n_iterations=iterations)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"image": str(folder / "image.nii.gz")}
    _write(sitk.Cast(corrected, sitk.sitkFloat32), paths["image"])
    for i, m in enumerate(crop_masks):
        paths[masks[i]] = str(folder / f"mask{i}.nii.gz")
        _write(m, paths[masks[i]])
    (folder / "done").write_text("ok")
    return {"seconds": time.perf_counter() - t0, **paths}


def _write(img: sitk.Image, path: str) -> None:
    tmp = f"{path}.tmp.nii.gz"
    sitk.WriteImage(img, tmp, useCompression=True)
    os.replace(tmp, path)


def n4_rois(rois: pd.DataFrame, cache_dir: str | os.PathLike, *, shrink_factor: int = 4,
            n_iterations: Sequence[int] = (30, 30, 30), margin_mm: float = 25.0,
            n_jobs: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """N4 bias-field correction of every scan, cropped around its ROIs, cached on disk.

    Each scan is cropped to the union of its masks plus ``margin_mm`` (the vertebra and its
    neighbourhood: N4 then fits the field where it matters, much faster than on the whole field
    of view), corrected with :func:`vcfnb.preprocess.n4_correct`, and written with its cropped
    masks under ``cache_dir/n4/<hash>/`` (hash of the input files and parameters), so a re-run
    reuses them. Resampling and normalisation follow in the extraction settings
    (:func:`settings_b`).

    Returns
    -------
    (rois, log)
        A copy of ``rois`` pointing at the corrected images/cropped masks, and a per-scan log
        ``image, seconds, cached``.
    """
    from joblib import Parallel, delayed

    root = Path(cache_dir) / "n4"
    jobs, keys = [], {}
    for image, grp in rois.groupby("image", sort=False):
        masks = list(dict.fromkeys(grp["mask"].astype(str)))
        h = hashlib.sha256()
        for p in (image, *masks):
            h.update(_digest(p).encode())
        h.update(repr((int(shrink_factor), list(n_iterations), float(margin_mm))).encode())
        key = h.hexdigest()[:24]
        keys[image] = (key, masks)
        if not (root / key / "done").is_file():
            jobs.append((image, masks, str(root / key)))
    done = Parallel(n_jobs=n_jobs)(
        delayed(_n4_one)(i, m, o, int(shrink_factor), list(n_iterations), float(margin_mm))
        for i, m, o in jobs)
    secs = {j[0]: d["seconds"] for j, d in zip(jobs, done)}
    out = rois.copy()
    for i, r in out.iterrows():
        key, masks = keys[r["image"]]
        out.at[i, "mask"] = str(root / key / f"mask{masks.index(str(r['mask']))}.nii.gz")
    out["image"] = [str(root / keys[p][0] / "image.nii.gz") for p in rois["image"]]
    log = pd.DataFrame({"image": [Path(p).name for p in keys],
                        "seconds": [secs.get(p, 0.0) for p in keys],
                        "cached": [p not in secs for p in keys]})
    return out, log


# --------------------------------------------------------------------------------------------
# arm B: selection and classifiers
# --------------------------------------------------------------------------------------------
def selection_b(*, alpha: float = 0.05, corr_threshold: float = 0.9, lasso_cv: int = 10,
                test: str = "auto", rng: int = 0):
    """Seed 001's selection chain: z-score → t-test (Mann-Whitney when not normal) p < alpha
    → |r| > ``corr_threshold`` redundancy removal → LASSO with ``lasso_cv``-fold CV.

    The LASSO solver runs at scikit-learn's default tolerance (``tol=1e-4``, at most 2000
    iterations) instead of :class:`vcfnb.selection.LassoSelector`'s 1e-6: with hundreds of
    weak deep features and shuffled labels, the 1e-6 fits near separation took up to minutes
    each inside the permutation test. On the paper-sized simulated cohort's real labels the
    chosen lambda and features were identical at both tolerances (coefficients within 0.011);
    on shuffled labels 1-4 of 30-60 selected features differed in 4 of 9 permutations."""
    return models.make_radiomics_pipeline([
        "zscore", ("univariate", {"test": test, "alpha": alpha}),
        ("correlation", {"threshold": corr_threshold}),
        ("lasso", {"cv": lasso_cv, "rule": "min", "tol": 1e-4, "max_iter": 2000})], rng=rng)


def fit_selection(X: pd.DataFrame, y: pd.Series, split_: pd.Series, **kw) -> Any:
    """Fit :func:`selection_b` on the training rows of ``X``; return the fitted pipeline."""
    tr = split_.reindex(X.index) == "train"
    return selection_b(**kw).fit(X[tr], y.reindex(X.index)[tr])


def step_counts(pipe, n_input: int) -> pd.DataFrame:
    """Features left after each step of a fitted selection pipeline."""
    rows = [{"step": "input", "n_features": int(n_input)}]
    for name, step in pipe.steps:
        if hasattr(step, "get_feature_names_out") and hasattr(step, "transform"):
            rows.append({"step": name, "n_features": len(step.get_feature_names_out())})
    return pd.DataFrame(rows)


def classifier_table(X: pd.DataFrame, y: pd.Series, split_: pd.Series, *, prefix: str,
                     names: Sequence[str] = models.CLASSIFIERS, cv: int = 5, rng: int = 0,
                     n_jobs: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tune each classifier by inner ``cv``-fold CV on the training rows, score everybody.

    ``cv=0`` fits each classifier with its default hyper-parameters (no tuning; fast runs).
    Returns ``(performance, scores)``: the stacked :func:`performance` rows (model names
    ``<prefix>-<classifier>``) and a DataFrame of scores (one column per classifier).
    """
    tr = (split_.reindex(X.index) == "train").to_numpy()
    yy = y.reindex(X.index)
    fitted = models.fit_classifiers(X[tr], yy[tr], list(names), cv=max(int(cv), 2), rng=rng,
                                    tuned=int(cv) > 1, n_jobs=n_jobs)
    sc = models.predict_scores(fitted, X)
    perf = pd.concat([performance(f"{prefix}-{n}", yy, sc[n], split_) for n in names],
                     ignore_index=True)
    return perf, sc


def fuse(rad: pd.DataFrame, deep: pd.DataFrame) -> pd.DataFrame:
    """Rad and DL features side by side for the same patients (inner join on ``patient_id``)."""
    d = deep.copy()
    d.index = d.index.astype(str)
    r = rad.copy()
    r.index = r.index.astype(str)
    return r.join(d, how="inner")


def dlr_score_formula(pipe, *, name: str = "DLR_score", digits: int = 6) -> str:
    """The DLR score formula of a fitted :func:`selection_b` (LASSO on z-scored features), as
    seed 001 printed it."""
    return models.radscore_formula(pipe["lasso"], name=name, digits=digits)


# --------------------------------------------------------------------------------------------
# clinical model and nomogram
# --------------------------------------------------------------------------------------------
def clinical_design(cases: pd.DataFrame, predictors: Sequence[str] = CLINICAL) -> pd.DataFrame:
    """Numeric design of the clinical predictors (index ``patient_id``): ``sex`` → ``male``,
    ``location`` → ``cervical``/``thoracic`` indicators (lumbar reference)."""
    d = cases.set_index(cases.patient_id.astype(str))
    out = pd.DataFrame(index=d.index)
    for p in predictors:
        if p == "sex":
            out["male"] = (d["sex"].astype(str).str.upper() == "M").astype(int)
        elif p == "location":
            for lv in ("cervical", "thoracic"):
                out[lv] = (d["location"] == lv).astype(int)
        else:
            out[p] = pd.to_numeric(d[p])
    return out


def clinical_analysis(cases: pd.DataFrame, split_: pd.Series, *, outcome: str = "outcome",
                      predictors: Sequence[str] = CLINICAL, enter_p: float = 0.05,
                      keep_p: float = 0.05) -> tuple[pd.DataFrame, list[str]]:
    """Supplementary table 1 of seed 001 on the training patients, and the independent predictors.

    Univariate logistic regression of every predictor, then a multivariable model of those
    with univariate p < ``enter_p``; the design columns with multivariable p < ``keep_p`` are the
    independent predictors of the clinical model. When none qualifies (e.g. a cohort without
    any effect), the single best univariate term is used so the model stays defined — said in
    the returned table's ``attrs["note"]``.
    """
    X = clinical_design(cases, predictors)
    y = cases.set_index(cases.patient_id.astype(str))[outcome]
    tr = split_.reindex(X.index) == "train"
    data = X[tr].assign(**{outcome: y[tr]})
    usable = [c for c in X.columns if data[c].nunique() > 1]
    table = stats.univariate_multivariate(data, outcome, usable, enter_p=enter_p)
    keep = table.loc[table["p_multi"] < keep_p, "term"].tolist()
    keep = [k for k in keep if k in X.columns]
    note = ""
    if not keep:
        best = table.sort_values("p_uni").term.iloc[0]
        keep = [best]
        note = (f"no predictor was independent (multivariable p < {keep_p}); the clinical model "
                f"uses the best univariate term {best!r}")
    table.attrs["note"] = note
    return table, keep


def stacked_dlr_score(selection: Any, X: pd.DataFrame, y: pd.Series, split_: pd.Series, *,
                      cv: int = 5, rng: int = 0, name: str = "DLR_score") -> pd.Series:
    """DLR score to build the DLRN on: training patients scored **out of fold**, test patients
    by the chain fitted on all training patients.

    ``selection`` is the fitted :func:`fit_selection` chain (z-score → test → |r| → LASSO). A
    nomogram fitted on the training patients' in-sample DLR scores — the LASSO saw those
    patients — over-weights the score. Here each training patient's score comes from a clone of the
    chain refitted, with the same settings, on the other ``cv`` − 1 folds of the training
    patients (stratified, seeded by ``rng``); the test patients' scores are unchanged. This is
    ordinary stacking; the paper does not say which scores its nomogram was fitted on. It does
    not by itself make the DLRN well calibrated: in the paper-sized simulated run the test
    split's Hosmer–Lemeshow p is still ≈ 0 (cause not found; see the notebook's HL table).

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> X = pd.DataFrame(g.normal(size=(60, 8)), index=[f"p{i}" for i in range(60)]).add_prefix("f")
    >>> y = pd.Series((X.f0 + g.normal(size=60) > 0).astype(int), index=X.index)
    >>> sp = pd.Series(["train"] * 40 + ["test"] * 20, index=X.index)
    >>> sel = fit_selection(X, y, sp, alpha=0.5, lasso_cv=3)
    >>> s = stacked_dlr_score(sel, X, y, sp, cv=4)
    >>> bool(np.allclose(s[sp == "test"], models.radscore(sel, X[sp == "test"])))
    True
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    out = models.radscore(selection, X, name=name)
    tr = X.index[(split_.reindex(X.index) == "train").to_numpy()]
    yt = y.reindex(tr).astype(int)
    folds = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=int(rng))
    for fit_pos, held_pos in folds.split(np.zeros(len(tr)), yt.to_numpy()):
        fold_model = clone(selection).fit(X.loc[tr[fit_pos]], yt.iloc[fit_pos])
        out.loc[tr[held_pos]] = models.radscore(fold_model, X.loc[tr[held_pos]],
                                                name=name).to_numpy()
    return out


def fit_dlrn(dlr_score: pd.Series, clinical: pd.DataFrame, y: pd.Series, split_: pd.Series
             ) -> tuple[LogisticRegression, pd.DataFrame, stats.Nomogram]:
    """DLRN: unpenalised logistic regression of the DLR score and the independent clinical
    predictors on the training patients; returns ``(model, design, nomogram)``."""
    X = clinical.join(dlr_score.rename("DLR_score"), how="inner")
    X = X[["DLR_score", *[c for c in clinical.columns]]]
    tr = split_.reindex(X.index) == "train"
    m = LogisticRegression(penalty=None, max_iter=10000).fit(X[tr], y.reindex(X.index)[tr])
    coef = dict(zip(X.columns, m.coef_.ravel()))
    nomo = stats.nomogram_points(coef, float(m.intercept_[0]), data=X[tr])
    return m, X, nomo


def comparison(y: pd.Series, scores_: Mapping[str, pd.Series], split_: pd.Series, *,
               groups: int = 10) -> dict[str, pd.DataFrame]:
    """Seed 001's model comparison: ROC inputs, DeLong matrix, calibration + HL, DCA.

    ``scores_`` maps a model name to its probability per patient. Returns tables
    ``roc_<split>`` (long: model, y_true, score), ``delong_<split>``, ``calibration_<split>``
    (with model labels carrying the Hosmer–Lemeshow p), ``hl`` and ``dca_<split>``.
    """
    out: dict[str, pd.DataFrame] = {}
    hl_rows = []
    for sp in ("train", "test"):
        ids = split_.index[split_ == sp]
        yy = y.reindex(ids).astype(int)
        probs = {k: v.reindex(ids).astype(float) for k, v in scores_.items()}
        out[f"roc_{sp}"] = pd.concat([pd.DataFrame({"model": k, "y_true": yy.to_numpy(),
                                                    "score": v.to_numpy()})
                                      for k, v in probs.items()], ignore_index=True)
        out[f"delong_{sp}"] = stats.delong_matrix(yy.to_numpy(), {k: v.to_numpy()
                                                                  for k, v in probs.items()})
        cal = []
        for k, v in probs.items():
            hl = stats.hosmer_lemeshow(yy.to_numpy(), np.clip(v.to_numpy(), 1e-6, 1 - 1e-6),
                                       groups=groups)
            hl_rows.append({"model": k, "split": sp, "statistic": hl["statistic"],
                            "dof": hl["dof"], "p_value": hl["p_value"]})
            c = stats.calibration_curve(yy.to_numpy(), v.to_numpy(),
                                        n_bins=min(groups, max(2, len(yy) // 8)))
            cal.append(c.assign(model=f"{k} (HL p={hl['p_value']:.3f})"))
        out[f"calibration_{sp}"] = pd.concat(cal, ignore_index=True)
        out[f"dca_{sp}"] = stats.decision_curve(yy.to_numpy(), {k: v.to_numpy()
                                                                for k, v in probs.items()},
                                                thresholds=np.linspace(0.01, 0.99, 99))
    out["hl"] = pd.DataFrame(hl_rows)
    return out


# --------------------------------------------------------------------------------------------
# morphometry
# --------------------------------------------------------------------------------------------
def morphometric_wedge(rois: pd.DataFrame, *, reader: str = "1", wedge_threshold: float = 0.20
                       ) -> pd.DataFrame:
    """Anterior/middle/posterior heights of each fractured body and the derived
    "anterior wedge deformity" (:func:`vcfnb.morphometry.semantic_from_morphometry`)."""
    from vcfnb import morphometry

    rows = []
    for r in rois[rois.reader.astype(str) == str(reader)].itertuples():
        h = morphometry.vertebral_heights(io.read_image(r.mask), int(r.label))
        sem = morphometry.semantic_from_morphometry(h, wedge_threshold=wedge_threshold)
        rows.append({"patient_id": r.patient_id, **h,
                     **morphometry.height_ratios(h),
                     "wedge_morphometry": int(bool(sem["anterior_wedge"]))})
    return pd.DataFrame(rows)


def wedge_agreement(morpho: pd.DataFrame, cases: pd.DataFrame,
                    column: str = "wedge_deformity") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement of the morphometric and the read "anterior wedge deformity":
    ``(crosstab, summary)`` with percent agreement and Cohen's kappa."""
    from sklearn.metrics import cohen_kappa_score

    d = morpho.merge(cases[["patient_id", column]], on="patient_id")
    tab = pd.crosstab(d[column].rename(f"{column} (read)"),
                      d["wedge_morphometry"].rename("wedge (morphometry)"))
    summ = pd.DataFrame([{"n": len(d), "agreement": float((d[column] == d.wedge_morphometry).mean()),
                          "cohen_kappa": float(cohen_kappa_score(d[column], d.wedge_morphometry))}])
    return tab.reset_index(), summ


# --------------------------------------------------------------------------------------------
# permutation tests
# --------------------------------------------------------------------------------------------
def permutation(pipe, X: pd.DataFrame, y: pd.Series, split_: pd.Series, *,
                n_permutations: int, rng: int = 0, n_jobs: int = 1) -> models.PermutationResult:
    """Whole-pipeline label-permutation test, train/test design (labels of the training
    patients shuffled, the pipeline refitted, AUC on the untouched test patients)."""
    tr = (split_.reindex(X.index) == "train").to_numpy()
    yy = y.reindex(X.index).astype(int)
    return models.permutation_test(pipe, X[tr], yy[tr], X_test=X[~tr], y_test=yy[~tr],
                                   n_permutations=n_permutations, rng=rng, n_jobs=n_jobs)


def gradcam_cases(result, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Input slices and Grad-CAM maps of a few cases of a :class:`vcfnb.deep.DeepResult`."""
    imgs, cams = [], []
    for pid in ids:
        pos = result.slices.index.get_loc(str(pid))
        imgs.append(result.stacks[pos].numpy())
        cams.append(np.asarray(result.gradcam(str(pid))))
    return np.stack(imgs), np.stack(cams)


def compare_models(y: pd.Series, probs: Mapping[str, pd.Series], split_: pd.Series, *,
                   prefix: str = "B_") -> pd.DataFrame:
    """Seed 001 table 5: :func:`performance` of each model (name ``<prefix><key>``) stacked."""
    return pd.concat([performance(f"{prefix}{k}", y, v, split_) for k, v in probs.items()],
                     ignore_index=True)


def roc_by_split(y: pd.Series, score: pd.Series, split_: pd.Series) -> dict[str, tuple]:
    """``{"train": (y, score), "test": (y, score)}`` for :func:`vcfnb.plots.plot_roc`."""
    sp = split_.reindex(score.index)
    yy = y.reindex(score.index)
    return {s: (yy[sp == s].to_numpy(), score[sp == s].to_numpy()) for s in ("train", "test")}


def record_permutation(run, model: str, result: models.PermutationResult) -> pd.DataFrame:
    """Store a permutation test's p-value and null summary with ``model``'s test metrics in
    ``metrics.json`` (keys ``permutation_p_value``, ``permutation_null_mean``,
    ``permutation_n``) and return its summary table."""
    summ = result.summary()
    entry = run.models.setdefault(model, {}).setdefault("test", {})
    entry.update({"permutation_p_value": round(float(result.p_value), 6),
                  "permutation_null_mean": round(float(np.mean(result.null_auc)), 6),
                  "permutation_n": int(result.n_permutations)})
    run.write_metrics()
    return summ


def with_wedge(cases: pd.DataFrame, morpho: pd.DataFrame, source: str = "read",
               column: str = "wedge_deformity") -> pd.DataFrame:
    """Cases with the "anterior wedge deformity" the clinical model uses: the radiologists'
    reading (``source="read"``, the cohort column) or vertebral morphometry
    (``source="morphometry"``, :func:`morphometric_wedge`)."""
    if source == "read":
        return cases
    if source != "morphometry":
        raise ValueError(f"wedge source must be 'read' or 'morphometry', got {source!r}")
    m = morpho.set_index("patient_id")["wedge_morphometry"]
    out = cases.copy()
    out[column] = out.patient_id.map(m).astype(int)
    return out
