"""Study rules of ``vcf_benign_malignant`` (seeds 000 and 001): benign vs malignant VCF on MRI.

Two arms of one notebook:

* **Arm A** (seed 000, T2WI radiomics): reader ICC > 0.75 → 7:3 stratified split → random
  oversampling → z-score → |r| > 0.99 redundancy filter → LASSO → RFE with a linear SVM whose
  feature count is chosen by CV AUC → linear SVM (:func:`arm_a_pipeline`).
* **Arm B** (seed 001, 2.5D deep-learning radiomics nomogram): N4
  (:func:`vcfnb.preprocess.n4_rois`), resampling and normalisation (:func:`settings_b`),
  handcrafted features, ICC ≥ 0.85 on the re-segmented subset, z-score → t-test/Mann-Whitney →
  |r| > 0.9 → LASSO (:func:`selection_b`), eight classifiers (:func:`classifier_scores`), 2.5D
  ResNet50 features (:mod:`vcfnb.deep`), DLR fusion and score, clinical univariate/multivariable
  logistic regression (:func:`clinical_analysis`) and the DLRN nomogram (:func:`dlrn_chain`;
  every training input out of fold, one fine-tuned network per training fold:
  :func:`vcfnb.deep.deep_oof`).

This module holds only the two papers' rules (what the cohort must hold, the chains, the clinical
design and the nomogram); evaluation happens in the notebook on the predictions table
(:mod:`vcfnb.stats`), the permutation test is :func:`vcfnb.models.permutation_test`.

References
----------
Seed 000: Application value of MRI radiomics in differential diagnosis of osteoporotic and
malignant neoplastic vertebral compression fractures. Int J Radiat Res 2024;22(4).
Seed 001: Liang W et al. MRI-based 2.5D deep learning radiomics nomogram for the differentiation
of benign versus malignant vertebral compression fractures. Front Oncol 2025;15:1603672.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

from vcfnb import (composition, contract, io, models, reliability, stats, features as feat,
                   selection as sel)
from vcfnb.contract import Column, Folds, Requirements

SEMANTIC = ["wedge_deformity", "band_edema", "paravertebral_mass", "diffuse_signal",
            "posterior_involvement"]
#: clinical predictors of seed 001 (location is categorical; lumbar is the reference level)
CLINICAL = ["age", "sex", "location", *SEMANTIC]
LOCATIONS = ("cervical", "thoracic", "lumbar")
_CLASSES = ["shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]
#: seed 001's handcrafted features (section 3.2.1): 1835 in all, 14 shape, 360 first-order (its
#: text names no image type nor filter setting; a selected wavelet_LLL feature shows wavelets)
PAPER_B_FEATURES = {"total": 1835, "shape": 14, "firstorder": 360}
#: seed 001 names no LBP setting: :func:`settings_b` writes pyradiomics' defaults out
LBP_DEFAULTS = composition.LBP_DEFAULTS

#: cross-validations of arm A (seed 000) and arm B (seed 001); checked per arm by
#: :func:`check_arms` (each arm's classes), and on the whole cohort by the pre-flight check
FOLDS_A = (Folds("cv_oof_a"), Folds("lasso_cv_a", within=("cv_oof_a",)),
           Folds("rfe_cv_a", within=("cv_oof_a",)))
FOLDS_B = (Folds("stack_cv_b"), Folds("lasso_cv_b", within=("stack_cv_b",)), Folds("tune_cv"))

REQUIREMENTS = Requirements(
    study="vcf_benign_malignant",
    design="holdout",
    sequences=("T2",),
    rois=("fractured_body",),
    readers={"1": "every step"},
    optional_readers={"2": "the reader ICC filter (arm A ICC > 0.75, arm B ICC >= 0.85)"},
    columns=(
        Column("{outcome}", "binary", needed_for="every model (1 = malignant)", outcome=True),
        Column("age", "numeric", needed_for="table 1 and the clinical model"),
        Column("sex", "category", ("M", "F"), needed_for="table 1 and the clinical model"),
        Column("location", "category", LOCATIONS, needed_for="table 1 and the clinical model"),
        *(Column(c, "binary", needed_for="the clinical model (MRI semantic feature)")
          for c in SEMANTIC),
    ),
    folds=FOLDS_A + FOLDS_B,
    test_size_param="test_size",
    main_models=("A_T2WI_radiomics", "B_DLRN"),
    notes=("Column `arm` (A/B) assigns patients to the arms; without it every patient is in "
           "both arms.", "Sagittal slices: the slice axis is read from each image's direction."),
)


def settings_a(image_types: Sequence[str] = ("Original", "Wavelet"), *, bin_width: float = 25.0
               ) -> dict:
    """pyradiomics settings of arm A (seed 000): 3D-Slicer defaults on the native grid, fixed
    bin width, ``image_types`` (paper: original + the 8 wavelet decompositions)."""
    return {"setting": {"binWidth": float(bin_width), "label": 1, "correctMask": True},
            "imageType": {t: {} for t in image_types},
            "featureClass": {c: [] for c in _CLASSES},
            "vcfnb": {"study": "vcf_benign_malignant arm A (seed 000)"}}


def settings_b(image_types: Sequence[str] = ("Original", "Wavelet", "LoG", "Square", "SquareRoot",
                                             "Logarithm", "Exponential", "Gradient"),
               *, log_sigma: Sequence[float] = (1.0, 2.0, 3.0),
               spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), interpolator: str = "sitkBSpline",
               bin_width: float = 10.0, normalize: bool = True, normalize_scale: float = 100.0,
               lbp_bin_width: float = 1.0) -> dict:
    """pyradiomics settings of arm B (seed 001): resampling, normalisation, image types.

    Resampling to ``spacing_mm`` (x, y, z of the image grid; seed 001: 1 × 1 × 1 mm with
    nearest-neighbour interpolation — ``interpolator`` is a parameter because nearest neighbour
    on an upsampled grid replicates voxels), pyradiomics whole-image normalisation (z-score ×
    ``normalize_scale``; ``normalize=False`` keeps absolute intensities) and fixed bin width.
    ``LBP2D`` / ``LBP3D`` get :data:`LBP_DEFAULTS` written out (seed 001 states none) and their
    own bin width ``lbp_bin_width``: LBP values are small numbers (uniform LBP2D: the integers
    0-9), which ``bin_width`` 10 would put in one or two bins (``docs/filters.md``).

    Examples
    --------
    >>> sorted(settings_b(["Original", "LoG"])["imageType"])
    ['LoG', 'Original']
    """
    types = {t: ({"sigma": [float(s) for s in log_sigma]} if t == "LoG"
                 else {**LBP_DEFAULTS[t], "binWidth": float(lbp_bin_width)} if t in LBP_DEFAULTS
                 else {}) for t in image_types}
    return {"setting": {"normalize": bool(normalize), "normalizeScale": float(normalize_scale),
                        "binWidth": float(bin_width), "label": 1, "correctMask": True,
                        "resampledPixelSpacing": [float(s) for s in spacing_mm],
                        "interpolator": interpolator, "padDistance": 5},
            "imageType": types, "featureClass": {c: [] for c in _CLASSES},
            "vcfnb": {"study": "vcf_benign_malignant arm B (seed 001)"}}


def composition_b(settings: Mapping | str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Arm B's feature composition without extracting: the image types × feature classes table
    (:func:`vcfnb.composition.composition`), its totals beside seed 001's
    (:data:`PAPER_B_FEATURES`, :func:`vcfnb.composition.versus`) and one sentence per part
    that differs."""
    comp = composition.composition(settings)
    v = composition.versus(comp, PAPER_B_FEATURES)
    fo, tex, (n, ref_n) = v.loc["firstorder"], v.loc["texture"], v.loc["images"].iloc[:2]
    q, r = divmod(int(tex.reference), int(ref_n))
    per_class = comp.iloc[-1].drop(["image_type", "images", "total", "ibsi", "shape", "firstorder"])
    why = {
        "images": f"Derived images: {n:g} from these settings (the rows above); the paper's "
                  f"{fo.reference:.0f} first-order features at {fo['run per image']:.0f} per "
                  f"image imply {ref_n:g}, and it lists no image type, LoG sigma or LBP "
                  "setting to match them with.",
        "firstorder": f"First-order: {n:g} × {fo['run per image']:.0f} = {fo['this run']:.0f} vs "
                      f"{fo.reference:.0f}: the same features per image, not as many images.",
        "texture": f"Texture: {tex['run per image']:.0f} per image here ("
                   + ", ".join(f"{k.upper()} {int(c / n)}" for k, c in per_class.items())
                   + f"); the paper's {tex.reference:.0f} = {ref_n:g} × {q} + {r}: {q} per image "
                   f"(which ones, it does not say) and {r} that no image explains.",
        "shape": f"Shape: {v.loc['shape', 'this run']:.0f} vs {v.loc['shape', 'reference']:.0f}.",
        "total": f"Total: {v.loc['total', 'this run']:.0f} vs {v.loc['total', 'reference']:.0f}, "
                 "the sum of the parts above."}
    return comp, v, [why[p] for p in v.index[v["difference"].fillna(0) != 0]]


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


def check_arms(run) -> pd.DataFrame:
    """The fold counts of each arm checked on that arm's patients (the pre-flight check counts
    the whole cohort); raises :class:`vcfnb.contract.CohortRequirementsError` listing all."""
    if run.features_only:
        return pd.DataFrame(columns=["requirement", "where", "problem", "fix"])
    found = []
    for name, folds in (("A", FOLDS_A), ("B", FOLDS_B)):
        cases, rois = arm(run.cohort, name)
        req = dataclasses.replace(REQUIREMENTS, columns=(), sequences=(), rois=(), readers={},
                                  folds=folds)
        t = contract.check(req, cases, rois, run.params)
        found.append(t.assign(problem=f"arm {name}: " + t["problem"]))
    unmet = pd.concat(found, ignore_index=True)
    if len(unmet):
        run.table("requirements_unmet", unmet)
        raise contract.CohortRequirementsError(REQUIREMENTS.study, unmet)
    return unmet


def slice_axis(rois: pd.DataFrame, *, tol_deg: float = 20.0) -> int:
    """The array axis (of ``sitk.GetArrayFromImage``) along which the scans are cut into
    sagittal slices, read from each image's direction cosines.

    The sagittal slices are the planes of constant left-right (LPS x) position: the slice axis
    is the index axis whose direction is closest to x. Raises naming the file when an image has
    no axis within ``tol_deg`` of left-right (oblique or non-sagittal planes) or when the images
    disagree (then the 2.5D stacks would mix planes).
    """
    axes, bad = {}, []
    for path in dict.fromkeys(rois["image"].astype(str)):
        d = np.asarray(io.read_image_info(path).direction, float).reshape(3, 3)
        lr = np.abs(d[0, :])  # x component of each index axis's direction
        k = int(np.argmax(lr))
        if lr[k] < np.cos(np.deg2rad(tol_deg)):
            bad.append(f"{path}: no image axis within {tol_deg:g}° of left-right "
                       f"(direction {np.round(d.ravel(), 3).tolist()})")
        axes[path] = 2 - k  # sitk index k → numpy axis 2 - k
    if bad:
        raise ValueError("sagittal slices cannot be taken: " + "; ".join(bad[:5]))
    if len(set(axes.values())) > 1:
        first = {a: p for p, a in axes.items()}
        raise ValueError(f"scans are cut along different array axes {first}: store them in one "
                         "orientation (e.g. sitk.DICOMOrient) before the 2.5D step")
    return next(iter(axes.values()))


def follow_axis(settings: Mapping | str, axis: int) -> Mapping | str:
    """``settings`` unchanged, or, when they ask for by-slice (``force2D``) extraction, with the
    slice dimension set to the sagittal ``axis`` of :func:`slice_axis` (a numpy axis, as
    pyradiomics' ``force2Ddimension``). An ``LBP2D`` image type without its own
    ``force2Ddimension`` is computed in the sagittal planes too (pyradiomics' default is array
    axis 0, whatever the scan's orientation)."""
    s = feat.load_settings(settings)
    lbp2d = s["imageType"].get("LBP2D")
    if not s.get("setting", {}).get("force2D") and lbp2d is None:
        return settings
    if s["setting"].get("force2D"):
        s["setting"]["force2Ddimension"] = int(axis)
    if lbp2d is not None:
        lbp2d.setdefault("force2Ddimension", int(axis))
    return s


def table1_arm_a(cases: pd.DataFrame, *, outcome: str = "outcome") -> pd.DataFrame:
    """Seed 000 table 1: age, sex, tumour type (when given) and fracture site by group."""
    d = cases.assign(group=cases[outcome].map({1: "malignant", 0: "benign"}))
    cols = [c for c in ("age", "sex", "tumour_type", "location") if c in d]
    return stats.baseline_table(d, "group", cols)


def table1_arm_b(cases: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Seed 001 table 1: clinical and MRI features in the training vs testing cohorts."""
    cohort = split.reindex(cases.patient_id.astype(str)).map({"train": "training",
                                                             "test": "testing"})
    d = cases.assign(cohort=cohort.to_numpy())
    d[SEMANTIC] = d[SEMANTIC].replace({0: "absent", 1: "present"})
    return stats.baseline_table(d, "cohort", CLINICAL, categorical=SEMANTIC)


def extract(rois: pd.DataFrame, settings: Mapping | str, *, n_jobs: int = 2,
            cache_dir=None) -> pd.DataFrame:
    """:func:`vcfnb.features.extract` for every ROI row; raises naming the failed ROIs."""
    table = feat.extract(rois, settings, n_jobs=n_jobs, cache_dir=cache_dir, progress=False)
    fails = feat.failures_table(table)
    if not fails.empty:
        bad = fails.groupby(["patient_id", "mask"]).reason.first().head(5)
        raise RuntimeError(f"feature extraction failed for {len(fails)} ROI/image-type pairs, "
                           f"e.g. {bad.to_dict()}")
    return table


def reader_icc(table: pd.DataFrame, *, icc: str = "ICC2", threshold: float = 0.75,
               strict: bool = True) -> tuple[pd.DataFrame, list[str], str]:
    """Per-feature ICC between reader 1 and reader 2 on the patients both outlined.

    Returns ``(icc_table, kept, note)``: the :func:`vcfnb.reliability.feature_icc` table (with a
    ``kept`` column), the features with ICC ``> threshold`` (``strict``, seed 000) or
    ``>= threshold`` (seed 001), and a one-line note. Without reader-2 ROIs (single-reader
    mode) the filter is skipped: every feature is kept and the note says so.
    """
    cols = [c for c in table.columns if c not in feat.ID_COLUMNS
            and pd.api.types.is_numeric_dtype(table[c])]
    r1 = table[table.reader.astype(str) == "1"].set_index("patient_id")
    r2 = table[table.reader.astype(str) == "2"].set_index("patient_id")
    both = r1.index.intersection(r2.index)
    if r2.empty:
        return (pd.DataFrame(columns=["feature", "icc", "kept"]), cols,
                f"single-reader mode: no reader-2 ROIs, the ICC filter is skipped and all "
                f"{len(cols)} features go on")
    if len(both) < 3:
        raise ValueError(f"ICC needs >= 3 patients outlined by both readers, found {len(both)}")
    tab = reliability.feature_icc(r1.loc[both, cols], r2.loc[both, cols], icc=icc)
    kept = reliability.select_reliable(tab, threshold, inclusive=not strict)
    tab = tab.assign(kept=tab["feature"].isin(kept).to_numpy())
    return tab, kept, (f"{len(kept)} of {len(cols)} features have ICC {'>' if strict else '>='} "
                       f"{threshold:g} on {len(both)} patients outlined by both readers")


def reader1(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Reader-1 feature rows (index ``patient_id``) restricted to ``columns``."""
    return table[table.reader.astype(str) == "1"].set_index("patient_id")[list(columns)]


def split(cases: pd.DataFrame, *, test_size: float = 0.3, rng: int = 0,
          outcome: str = "outcome") -> pd.Series:
    """Series ``patient_id → "train"/"test"``: the cohort's own ``split`` column when it gives
    one (honoured as is), else a stratified split by patient with ``test_size``."""
    if "split" in cases and cases["split"].astype(str).str.lower().isin(["train"]).any():
        s = cases.set_index(cases.patient_id.astype(str))["split"].astype(str).str.lower()
        if not s.isin(["train", "test"]).all():
            raise ValueError(f"column 'split' may hold train/test only in this study (no external "
                             f"cohort); found {sorted(set(s) - {'train', 'test'})}")
        return s.rename("split")
    train, test = models.split_by_patient(cases, outcome, test_size=test_size, rng=rng)
    s = pd.Series("train", index=cases.patient_id.astype(str), name="split")
    s[test.patient_id.astype(str)] = "test"
    return s


def arm_a_pipeline(*, corr_threshold: float = 0.99, lasso_cv: int = 5, rfe_cv: int = 5,
                   svm_c: float = 1.0, rng: int = 0, lasso_solver: str = "liblinear"):
    """Seed 000's chain as one leakage-free pipeline.

    z-score → |r| > ``corr_threshold`` filter → LASSO (L1 logistic, lambda by ``lasso_cv``-fold
    CV AUC) → RFE with a linear SVM (feature count by ``rfe_cv``-fold CV AUC) → random
    oversampling → linear SVM (its decision value is the score).

    Random oversampling of the minority class happens inside every fit that uses labels: the
    LASSO's and RFE's inner CV folds oversample their inner training part only (the selectors'
    ``sampler``), their final fits and the SVM oversample all training rows. Oversampling once
    before the chain (the paper's order) would put copies of a patient in both the inner
    training and validation folds. The label-free z-score and |r| filter see the training
    patients once each.

    ``lasso_solver``: ``"liblinear"`` or ``"cd"`` (glmnet's coordinate descent along the lambda
    path, :mod:`vcfnb.lasso_cd`; the notebook's default): the same objective. On the paper-sized
    and smoke simulated cohorts' real labels both chose the same lambda, LASSO and RFE features;
    on 1 of 5 shuffled-label refits at paper size ``cd`` took the neighbouring lambda of a flat
    CV curve. One permutation refit 1.4-5.8x faster with ``cd`` (paper.yaml's comment).
    """
    over = {"sampler": sel.RandomOverSampler(random_state=int(rng))}
    return models.make_radiomics_pipeline([
        "zscore", ("correlation", {"threshold": corr_threshold}),
        ("lasso", {"cv": lasso_cv, "rule": "min", "min_features": 2, "solver": lasso_solver,
                   **over}),
        ("rfe", {"cv": rfe_cv, "C": svm_c, **over}), "oversample",
        SVC(kernel="linear", C=svm_c)], rng=rng)


def arm_a_outputs(pipe) -> dict[str, pd.DataFrame]:
    """Tables behind seed 000's figures 2-4 and table 3 from a fitted :func:`arm_a_pipeline`:
    ``lasso_path``, ``lasso_cv``, ``rfe_cv`` (``n_features, auc, sd``) and ``coefficients``
    (``feature, coef`` of the final linear SVM on z-scored features, intercept first)."""
    lasso, rfe, svm = pipe["lasso"], pipe["rfe"], pipe[-1]
    coef = pd.DataFrame({"feature": ["intercept", *rfe.get_feature_names_out()],
                         "coef": [float(svm.intercept_[0]), *np.ravel(svm.coef_)]})
    cv = rfe.cv_results_.rename(columns={"mean_score": "auc", "sd_score": "sd"})
    return {"lasso_path": lasso.path_, "lasso_cv": lasso.cv_results_, "rfe_cv": cv,
            "coefficients": coef}


def selection_b(*, alpha: float = 0.05, corr_threshold: float = 0.9, lasso_cv: int = 10,
                test: str = "auto", rng: int = 0, lasso_solver: str = "liblinear"):
    """Seed 001's selection chain: z-score → t-test (Mann-Whitney when not normal) p < alpha
    → |r| > ``corr_threshold`` redundancy removal → LASSO with ``lasso_cv``-fold CV.

    ``lasso_solver="cd"`` (glmnet's coordinate descent at its tight default tolerance, what
    the notebook runs) converges: on the paper-sized simulated cohort it chose the lambda and
    features of liblinear at ``tol=1e-8`` in all 15 fits checked (5 selection fits x real and 2
    shuffled labelings), where ``"liblinear"`` at ``tol=1e-4`` (at most 2000 iterations; its
    tolerance was loosened from 1e-6 because near-separated shuffled-label fits took minutes)
    stopped short of the optimum and chose another lambda or support in 9 of them."""
    return models.make_radiomics_pipeline([
        "zscore", ("univariate", {"test": test, "alpha": alpha}),
        ("correlation", {"threshold": corr_threshold}),
        ("lasso", {"cv": lasso_cv, "rule": "min", "solver": lasso_solver,
                   **({"tol": 1e-4, "max_iter": 2000} if lasso_solver == "liblinear" else {})})],
        rng=rng)


def fit_selection(X: pd.DataFrame, y: pd.Series, split_: pd.Series, **kw) -> Any:
    """Fit :func:`selection_b` on the training rows of ``X``; return the fitted pipeline."""
    tr = split_.reindex(X.index) == "train"
    return selection_b(**kw).fit(X[tr], y.reindex(X.index)[tr])


def record_scores(run, scores: Mapping[str, pd.Series], y: pd.Series, split_: pd.Series, *,
                  splits: Sequence[str] = ("train", "test"), score_kind: str = "probability"
                  ) -> pd.DataFrame:
    """``run.predictions`` of every model in ``scores`` (name → score per patient) on each of
    ``splits``: ``train`` (resubstitution: the model was fitted on those patients) or
    ``train_oof`` (scores of the training patients that are out of fold) and ``test``."""
    for name, s in scores.items():
        for sp in splits:
            ids = split_.index[split_ == ("train" if sp == "train_oof" else sp)]
            run.predictions(name, sp, score=s.reindex(ids).dropna(), y_true=y,
                            score_kind=score_kind)
    return run.predictions_table


def fuse(rad: pd.DataFrame, deep: pd.DataFrame) -> pd.DataFrame:
    """Rad and DL features side by side for the same patients (inner join on ``patient_id``)."""
    d, r = deep.copy(), rad.copy()
    d.index, r.index = d.index.astype(str), r.index.astype(str)
    return r.join(d, how="inner")


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


def clinical_analysis(cases: pd.DataFrame, y: pd.Series, split_: pd.Series, *,
                      predictors: Sequence[str] = CLINICAL, enter_p: float = 0.05,
                      keep_p: float = 0.05) -> tuple[pd.DataFrame, list[str]]:
    """Supplementary table 1 of seed 001 on the training patients, and the independent predictors.

    Univariate logistic regression of every predictor (labels ``y``), then a multivariable model
    of those with univariate p < ``enter_p``; the design columns with multivariable p <
    ``keep_p`` are the independent predictors. When none qualifies the list is empty (the
    clinical model then has no predictor: constant scores, AUC 0.5, no cut-off).
    """
    X = clinical_design(cases, predictors)
    tr = split_.reindex(X.index) == "train"
    data = X[tr].assign(_y=y.reindex(X.index)[tr].astype(int))
    usable = [c for c in X.columns if data[c].nunique() > 1]
    table = stats.univariate_multivariate(data, "_y", usable, enter_p=enter_p)
    keep = [k for k in table.loc[table["p_multi"] < keep_p, "term"] if k in X.columns]
    return table, keep


def dlr_fit(X_rad: pd.DataFrame, y: pd.Series, *, selection: Mapping | None = None,
            template: Any = None, classifiers: Sequence[str] = (), tune_cv: int = 0,
            classifier_rng: int = 0) -> Callable:
    """``fit(deep_features, fit_ids)`` of the DLR chain for :meth:`vcfnb.deep.DeepOOF.chain`.

    The Rad features ``X_rad`` fused with one network's DL features (:func:`fuse`) go through
    :func:`selection_b` (``selection`` kwargs, or a fresh copy of ``template``) fitted on the
    rows ``fit_ids``; returns the DLR score (LASSO radscore) of every row (``DLR_score``) and the
    probability of each of ``classifiers`` on the selected features (``DLR-<name>``,
    :func:`vcfnb.models.classifier_scores`, tuned by ``tune_cv``-fold CV when > 1).
    """
    def fit(deep_features: pd.DataFrame, fit_ids) -> dict:
        X = fuse(X_rad, deep_features)
        sel = (clone(template) if template is not None else selection_b(**selection)).fit(
            X.loc[fit_ids], y.reindex(fit_ids).astype(int))
        out = {"DLR_score": models.radscore(sel, X, name="DLR_score")}
        if classifiers:
            sc = models.classifier_scores(sel.transform(X), y, fit_ids, names=list(classifiers),
                                          cv=tune_cv, rng=classifier_rng)
            out.update({f"DLR-{c}": sc[c] for c in classifiers})
        return out
    return fit


def _nomogram_fit(cases: pd.DataFrame, y: pd.Series, dlr_score: pd.Series, split_: pd.Series,
                  enter_p: float, keep_p: float) -> tuple:
    """Clinical predictor selection and the DLRN logistic regression on the ``train`` rows."""
    table, keep = clinical_analysis(cases, y, split_, enter_p=enter_p, keep_p=keep_p)
    X = clinical_design(cases)[keep].join(dlr_score.rename("DLR_score"), how="inner")
    X = X[["DLR_score", *keep]]
    tr = split_.reindex(X.index) == "train"
    m = LogisticRegression(C=np.inf, max_iter=10000).fit(X[tr], y.reindex(X.index)[tr])
    return table, keep, X, m


def dlrn_chain(X_rad: pd.DataFrame, deep_cv: Any, cases: pd.DataFrame, y: pd.Series,
               split_: pd.Series, *, selection: dict, classifiers: Sequence[str] = (),
               tune_cv: int = 0, classifier_rng: int = 0, test_scores: str = "auto",
               tol: float = 1.25, enter_p: float = 0.05, keep_p: float = 0.05, oof: bool = True,
               template: Any = None) -> dict:
    """Seed 001's DLRN from the labels up, fitted on the training patients only, every training
    input out of fold.

    ``deep_cv`` is a :func:`vcfnb.deep.deep_oof` result (one network per training fold). The DLR
    chain (:func:`dlr_fit`) runs through ``deep_cv.chain``: a training patient's DLR score comes
    from its fold's network and a selection chain fitted without its fold; a test patient's from
    the full-training chain or the mean of the fold chains, chosen after a label-free scale
    check on training rows (:func:`vcfnb.models.choose_test_scores`, ``test_scores``, ``tol``).
    Then the independent clinical predictors (:func:`clinical_analysis`) and an unpenalised
    logistic regression of the out-of-fold DLR score + those predictors on the training patients.
    With ``oof``, the DLRN's own out-of-fold training predictions: predictor selection and
    logistic regression refitted without each fold of ``deep_cv.fold``. Returns ``dlr`` (chain
    frames of :func:`dlr_fit`), ``dlr_oof`` (out-of-fold probability of each of ``classifiers``
    and ``fold``, training patients), ``dlr_score``, ``scale``, ``clinical_table``, ``keep``,
    ``design``, ``model``, ``score`` (DLRN probability of every patient) and ``oof`` (``score,
    fold`` of the training patients).
    """
    dlr = deep_cv.chain(dlr_fit(X_rad, y, selection=selection, template=template,
                                classifiers=classifiers, tune_cv=tune_cv,
                                classifier_rng=classifier_rng))
    dlr_score, scale = models.choose_test_scores(dlr["DLR_score"], test_scores, tol=tol)
    table, keep, X, m = _nomogram_fit(cases, y, dlr_score, split_, enter_p, keep_p)
    fold = deep_cv.fold.astype(int)
    out = {"dlr": dlr, "dlr_oof": pd.DataFrame({c: dlr[f"DLR-{c}"]["oof"] for c in classifiers},
                                               index=fold.index).assign(fold=fold),
           "dlr_score": dlr_score, "scale": scale, "clinical_table": table,
           "keep": keep, "design": X, "model": m,
           "score": pd.Series(m.predict_proba(X)[:, 1], index=X.index, name="DLRN")}
    if oof:
        prob = pd.Series(np.nan, index=fold.index, name="score")
        for k in sorted(set(fold)):
            held = fold.index[fold == k]
            *_, Xk, mk = _nomogram_fit(cases, y, dlr_score, split_.mask(
                split_.index.isin(held), "held_out"), enter_p, keep_p)
            prob[held] = mk.predict_proba(Xk.loc[held])[:, 1]
        out["oof"] = pd.DataFrame({"score": prob, "fold": fold})
    return out


def dlrn_test_auc(X_rad: pd.DataFrame, deep_cv: Any, cases: pd.DataFrame, y: pd.Series,
                  split_: pd.Series, **chain_kw) -> Callable:
    """``evaluate(selection, X, train_labels) -> test AUC`` of :func:`dlrn_chain` for
    :func:`vcfnb.models.permutation_test` (custom design): the DLR selection, the out-of-fold DLR
    score, the test-score choice, the clinical predictors and the logistic nomogram refitted on
    the given training labels, scored on the untouched test patients. The networks of
    ``deep_cv`` (per fold and full) are **held fixed** (fine-tuned once on the real labels): the
    null is conditional on the DL features."""
    train = split_.index[split_ == "train"]
    test = split_.index[split_ == "test"]
    kw = {k: v for k, v in chain_kw.items() if k not in ("classifiers", "oof")}

    def evaluate(selection, _X, labels) -> float:
        yy = y.copy()
        yy.loc[train] = np.asarray(labels).astype(int)
        out = dlrn_chain(X_rad, deep_cv, cases, yy, split_, template=selection, oof=False, **kw)
        return float(roc_auc_score(y.loc[test].astype(int), out["score"].loc[test]))
    return evaluate


def nomogram(chain: dict, split_: pd.Series) -> stats.Nomogram:
    """Points nomogram of a :func:`dlrn_chain` (scales from the training patients)."""
    X, m = chain["design"], chain["model"]
    coef = dict(zip(X.columns, m.coef_.ravel()))
    return stats.nomogram_points(coef, float(m.intercept_[0]),
                                 data=X[split_.reindex(X.index) == "train"])


def morphometric_wedge(rois: pd.DataFrame, *, reader: str = "1", wedge_threshold: float = 0.20,
                       height_axis: Any = "principal") -> pd.DataFrame:
    """Anterior/middle/posterior heights of each fractured body
    (:func:`vcfnb.morphometry.vertebral_heights`) and the derived "anterior wedge deformity"
    (:func:`vcfnb.morphometry.semantic_from_morphometry`).

    ``height_axis``: the body's cranio-caudal axis. A VCF cohort outlines one vertebra per
    patient, with no neighbours to give the spine's axis, so the default is the body's own
    axis (``"principal"``, :func:`vcfnb.morphometry.principal_height_axis`): a body tilted in
    the scanner (kyphosis, lordosis) is measured along its own height, not along the image's
    vertical. ``None``: the patient's superior axis from the image direction."""
    from vcfnb import morphometry

    rows = []
    for r in rois[rois.reader.astype(str) == str(reader)].itertuples():
        h = morphometry.vertebral_heights(io.read_image(r.mask), int(r.label),
                                          height_axis=height_axis)
        sem = morphometry.semantic_from_morphometry(h, wedge_threshold=wedge_threshold)
        rows.append({"patient_id": r.patient_id, **h, **morphometry.height_ratios(h),
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


def with_wedge(cases: pd.DataFrame, morpho: pd.DataFrame, source: str = "read",
               column: str = "wedge_deformity") -> pd.DataFrame:
    """Cases with the "anterior wedge deformity" the clinical model uses: the radiologists'
    reading (``source="read"``) or vertebral morphometry (``source="morphometry"``)."""
    if source == "read":
        return cases
    if source != "morphometry":
        raise ValueError(f"wedge source must be 'read' or 'morphometry', got {source!r}")
    out = cases.copy()
    out[column] = out.patient_id.map(morpho.set_index("patient_id")["wedge_morphometry"]).astype(int)
    return out


def gradcam_cases(result, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Input slices and Grad-CAM maps of a few cases of a :class:`vcfnb.deep.DeepResult`."""
    imgs = [result.stacks[result.slices.index.get_loc(str(p))].numpy() for p in ids]
    cams = [np.asarray(result.gradcam(str(p))) for p in ids]
    return np.stack(imgs), np.stack(cams)
