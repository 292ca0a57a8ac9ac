"""Study glue for seed 002 (``notebooks/osteoporosis_mri.ipynb``): bone mass from lumbar MRI.

What is specific to this study and not generic enough for the toolbox modules:

* the DXA rule that defines the outcome (:func:`dxa_rule`);
* which ROIs to extract (all of reader 1, reader 2 for the reliability subset) and the per-patient
  feature table (mean over L1-L4 or one column per level, prefixed by sequence);
* the radscore model of the paper (:class:`RadscoreModel`: z-score -> LASSO -> linear radscore ->
  logistic link) and the three models T1WI, T2WI, T1WI+T2WI;
* ComBat-style harmonisation of an external centre's features onto the training distribution
  (:func:`harmonise`, label-free, reference = training rows only);
* the real lumbar MRI cohort built from ``../shared/data/lumbar_mri`` (:func:`lumbar_mri_cohort`)
  with a simulated second reader (:func:`perturbed_reader`).

References
----------
Seed 002: radiomics of lumbar T1WI/T2WI for abnormal bone mass (DXA), external validation.
Johnson WE, Li C, Rabinovic A. Adjusting batch effects in microarray expression data using
empirical Bayes methods. Biostatistics 2007;8:118-127 (ComBat).
Stein CK et al. Removing batch effects from purified plasma cell gene expression microarrays with
modified ComBat. BMC Bioinformatics 2015;16:63 (M-ComBat: a reference batch).
Fortin J-P et al. Harmonization of cortical thickness measurements across scanners and sites.
NeuroImage 2018;167:104-120.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from vcfnb import stats
from vcfnb.selection import LassoSelector

__all__ = [
    "dxa_rule", "dxa_summary", "label_cases", "split_internal", "rois_for_extraction",
    "reader_icc", "patient_features", "harmonise",
    "harmonise_external", "RadscoreModel", "fit_models",
    "performance_table", "external_with_harmonisation", "radscore_table", "calibration_tables",
    "permutation_test", "require_outcome", "lumbar_mri_cohort", "ensure_lumbar_cohort",
    "perturbed_reader", "LEVELS", "SEQUENCE_PREFIX", "split_counts", "baseline_tables",
    "extraction_settings", "extraction_summary", "icc_summary", "model_groups", "models_table",
    "decision_curves", "delong_tables", "wilcoxon_by_split", "PermutationResult",
    "record_permutation", "matrix_summary", "harmonisation_shift", "selected_features",
    "roc_curves", "extra_numbers",
]

LEVELS = ("L1", "L2", "L3", "L4")
#: feature-name prefix per sequence (the paper prefixes T1WI features with 1 and T2WI with 2)
SEQUENCE_PREFIX = {"T1": "T1WI", "T2": "T2WI"}
_ID = ["patient_id", "roi", "sequence", "reader"]


def _rng(rng) -> np.random.Generator:
    return np.random.default_rng(rng)


def _int_state(rng) -> int:
    return int(_rng(rng).integers(0, 2**31 - 1))


# ---------------------------------------------------------------------------------------------
# outcome: the DXA rule
# ---------------------------------------------------------------------------------------------
def dxa_rule(cases: pd.DataFrame, *, age_cutoff: float = 50.0, t_threshold: float = -1.0,
             osteoporosis_threshold: float = -2.5, z_threshold: float = -2.0,
             t_col: str = "t_score", z_col: str = "z_score", age_col: str = "age",
             outcome: str = "outcome") -> pd.DataFrame:
    """Abnormal bone mass from DXA T/Z-scores, as seed 002 defines it.

    Patients aged ``>= age_cutoff`` are graded by the T-score (osteoporosis: T <= -2.5; low bone
    mass: -2.5 < T < -1; normal: T >= -1); younger patients by the Z-score (abnormal: Z < -2,
    normal otherwise). Abnormal = osteoporosis or low bone mass (the paper's two groups combined).
    The paper's "women and patients aged > 50 years" is read as the ISCD convention
    (postmenopausal women and men >= 50: T-score; younger: Z-score); menopause status is not in
    the cohort, so age alone selects the reference.

    Parameters
    ----------
    cases : DataFrame
        With ``patient_id`` and the DXA and age columns; not modified.

    Returns
    -------
    DataFrame
        ``patient_id, age, t_score, z_score, reference ("T"|"Z"), score, dxa_class
        (osteoporosis | low bone mass | abnormal (Z) | normal | unknown), abnormal (0/1, NaN when
        unknown), cohort_outcome`` (the cohort's own outcome column when present, else NaN) and
        ``agrees`` (rule result equals the cohort's outcome). Missing DXA columns give
        ``dxa_class = "unknown"`` for every row (a cohort without DXA).

    Examples
    --------
    >>> c = pd.DataFrame({"patient_id": ["a", "b", "c"], "age": [70, 40, 60],
    ...                   "t_score": [-2.7, -1.5, -0.5], "z_score": [-1.0, -2.3, 0.2]})
    >>> dxa_rule(c)[["dxa_class", "abnormal"]].values.tolist()
    [['osteoporosis', 1.0], ['abnormal (Z)', 1.0], ['normal', 0.0]]
    """
    n = len(cases)
    out = pd.DataFrame({"patient_id": cases["patient_id"].astype(str).to_numpy()})
    have = all(c in cases for c in (t_col, z_col, age_col))
    age = pd.to_numeric(cases[age_col], errors="coerce").to_numpy(float) if age_col in cases \
        else np.full(n, np.nan)
    t = pd.to_numeric(cases[t_col], errors="coerce").to_numpy(float) if t_col in cases \
        else np.full(n, np.nan)
    z = pd.to_numeric(cases[z_col], errors="coerce").to_numpy(float) if z_col in cases \
        else np.full(n, np.nan)
    out["age"], out["t_score"], out["z_score"] = age, t, z
    use_t = age >= age_cutoff
    out["reference"] = np.where(np.isnan(age), "", np.where(use_t, "T", "Z"))
    score = np.where(use_t, t, z)
    out["score"] = score
    cls = np.full(n, "unknown", dtype=object)
    if have:
        ok = ~np.isnan(score) & ~np.isnan(age)
        cls[ok & use_t & (t <= osteoporosis_threshold)] = "osteoporosis"
        cls[ok & use_t & (t > osteoporosis_threshold) & (t < t_threshold)] = "low bone mass"
        cls[ok & use_t & (t >= t_threshold)] = "normal"
        cls[ok & ~use_t & (z < z_threshold)] = "abnormal (Z)"
        cls[ok & ~use_t & (z >= z_threshold)] = "normal"
    out["dxa_class"] = cls
    out["abnormal"] = np.where(cls == "unknown", np.nan, (cls != "normal").astype(float))
    if outcome in cases:
        out["cohort_outcome"] = pd.to_numeric(cases[outcome], errors="coerce").to_numpy(float)
    else:
        out["cohort_outcome"] = np.nan
    out["agrees"] = out["abnormal"] == out["cohort_outcome"]
    return out


def dxa_summary(rule: pd.DataFrame) -> pd.DataFrame:
    """Counts of DXA classes by reference score, with agreement with the cohort's outcome.

    Examples
    --------
    >>> c = pd.DataFrame({"patient_id": ["a", "b"], "age": [70, 40], "t_score": [-2.7, 0.0],
    ...                   "z_score": [-1.0, 0.5], "outcome": [1, 0]})
    >>> int(dxa_summary(dxa_rule(c))["patients"].sum())
    2
    """
    g = rule.groupby(["reference", "dxa_class"], dropna=False)
    out = g.agg(patients=("patient_id", "size"),
                abnormal=("abnormal", lambda s: int(np.nansum(s))),
                agree_with_cohort_outcome=("agrees", "sum")).reset_index()
    return out


def label_cases(cases: pd.DataFrame, rule: pd.DataFrame, *, outcome: str = "outcome",
                from_dxa: bool = True) -> pd.DataFrame:
    """Cases with the study outcome: the DXA rule's result (``from_dxa``) or the cohort's column.

    Rows whose outcome is unknown under the chosen source are dropped. Adds ``dxa_class``.
    """
    out = cases.copy()
    out["patient_id"] = out["patient_id"].astype(str)
    r = rule.set_index("patient_id")
    out["dxa_class"] = out["patient_id"].map(r["dxa_class"])
    if from_dxa and r["abnormal"].notna().any():
        out[outcome] = out["patient_id"].map(r["abnormal"])
    if outcome not in out or out[outcome].isna().all():
        out[outcome] = np.nan  # no labels at all (real data without DXA): keep every row
        return out.reset_index(drop=True)
    out = out[out[outcome].notna()].copy()
    out[outcome] = out[outcome].astype(int)
    return out.reset_index(drop=True)


def split_counts(cases: pd.DataFrame, *, outcome: str = "outcome") -> pd.DataFrame:
    """Patients per split and class (normal = 0, abnormal = 1)."""
    t = cases.groupby(["split", outcome]).size().unstack(fill_value=0)
    t.columns = ["normal" if c == 0 else "abnormal" for c in t.columns]
    t["total"] = t.sum(axis=1)
    return t.reindex([s for s in ("train", "test", "external") if s in t.index]).reset_index()


BASELINE_VARIABLES = ("age", "sex", "height_cm", "weight_kg", "bmi")


def baseline_tables(cases: pd.DataFrame, *, outcome: str = "outcome",
                    variables: Sequence[str] = BASELINE_VARIABLES, rng=None) -> pd.DataFrame:
    """Tables 1 and 4: clinical characteristics by group in each split, with the tests chosen by
    normality and expected counts (:func:`vcfnb.stats.baseline_table`). Long table with a
    ``split`` column; groups ``0`` = normal, ``1`` = abnormal."""
    rows = []
    variables = [v for v in variables if v in cases]
    for split in ("train", "test", "external"):
        d = cases[cases["split"] == split]
        if d.empty or d[outcome].nunique() < 2:
            continue
        t = stats.baseline_table(d, outcome, variables, categorical=["sex"], rng=rng)
        t = t.rename(columns={"0": "normal", "1": "abnormal"})
        t.insert(0, "split", _SPLIT_NAMES[split])
        rows.append(t)
    return pd.concat(rows, ignore_index=True)


def extraction_settings(settings: str | Mapping = "osteoporosis_mri", *,
                        image_types: Sequence[str] = (), feature_classes: Sequence[str] = (),
                        overrides: Mapping | None = None,
                        log_sigma: Sequence[float] = ()) -> dict:
    """The study's pyradiomics settings: a packaged/user settings file narrowed for this run.

    ``image_types`` / ``feature_classes`` keep a subset of the file's image types and feature
    classes (empty = all of them); ``overrides`` update its ``setting`` section (e.g.
    ``force2D``); ``log_sigma`` replaces the LoG sigmas (mm). Returns a settings dict for
    :func:`vcfnb.features.extract`; the paper's named features
    (``boxsigmaimage_glcm_Correlation``, ``additivegaussiannoise_glszm_LowGrayLevelZoneEmphasis``,
    ``log-sigma-4-0-mm-3D_firstorder_Median``) need BoxSigma, AdditiveGaussianNoise, LoG (4 mm)
    and the glcm, glszm and firstorder classes.
    """
    from vcfnb.features import load_settings

    s = load_settings(settings)
    if image_types:
        lower = {k.lower(): k for k in s["imageType"]}
        missing = [t for t in image_types if t.lower() not in lower]
        if missing:
            raise ValueError(f"image types {missing} are not in the settings "
                             f"(available: {list(s['imageType'])})")
        s["imageType"] = {lower[t.lower()]: s["imageType"][lower[t.lower()]] for t in image_types}
    if log_sigma and "LoG" in s["imageType"]:
        s["imageType"]["LoG"] = {**(s["imageType"]["LoG"] or {}),
                                 "sigma": [float(v) for v in log_sigma]}
    if feature_classes:
        s["featureClass"] = {c: s["featureClass"].get(c) for c in feature_classes}
    s["setting"] = {**s["setting"], **dict(overrides or {})}
    return {k: v for k, v in s.items() if k in ("setting", "imageType", "featureClass",
                                                  "voxelSetting", "vcfnb")}


def extraction_summary(features: pd.DataFrame) -> pd.DataFrame:
    """ROIs, features and failed ROIs per sequence and reader."""
    cols = _feature_columns(features)
    f = features.assign(failed=features[cols].isna().all(axis=1))
    g = f.groupby(["sequence", "reader"])
    return pd.DataFrame({"rois": g.size(), "patients": g["patient_id"].nunique(),
                         "failed_rois": g["failed"].sum(),
                         "features": len(cols)}).reset_index()


def split_internal(cases: pd.DataFrame, *, outcome: str = "outcome", test_size: float = 0.3,
                   random_state: int = 0) -> pd.DataFrame:
    """7:3 stratified split of the internal patients; external rows keep ``split="external"``.

    ``train_test_split(stratify=outcome, test_size=0.3, random_state=...)`` over the patients
    whose ``split`` is not ``external`` (one row per patient, so a patient's ROIs never straddle
    the split). Returns ``cases`` with ``split`` set to ``train``/``test``/``external``.
    """
    out = cases.copy()
    ext = out.get("split", pd.Series("", index=out.index)).fillna("").astype(str).eq("external")
    internal = out.loc[~ext]
    tr, te = train_test_split(internal.index, test_size=test_size,
                              stratify=internal[outcome], random_state=random_state)
    out["split"] = "external"
    out.loc[tr, "split"] = "train"
    out.loc[te, "split"] = "test"
    return out


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------
def rois_for_extraction(rois: pd.DataFrame, cases: pd.DataFrame, *, reliability_patients: int = 0,
                        sequences: Sequence[str] = ("T1", "T2"), levels: Sequence[str] = LEVELS,
                        rng=None) -> pd.DataFrame:
    """The ROI rows to extract: reader 1 of every patient, reader 2 of a reliability subset.

    ``reliability_patients`` = number of (non-external) patients drawn with ``rng`` whose second
    reader is extracted for the ICC step (0 = all patients that have a second reader). Adds a
    column ``icc_subset``.
    """
    r = rois[rois["patient_id"].isin(cases["patient_id"].astype(str))
             & rois["sequence"].isin(list(sequences)) & rois["roi"].isin(list(levels))].copy()
    r["reader"] = r["reader"].astype(str)
    second = r[r["reader"] != "1"]
    pool = [p for p in cases.loc[cases.get("split", pd.Series("", index=cases.index))
                                 .fillna("").ne("external"), "patient_id"].astype(str)
            if p in set(second["patient_id"])]
    if reliability_patients and reliability_patients < len(pool):
        chosen = set(_rng(rng).choice(sorted(pool), reliability_patients, replace=False))
    else:
        chosen = set(pool)
    keep = (r["reader"] == "1") | ((r["reader"] == "2") & r["patient_id"].isin(chosen))
    out = r.loc[keep].copy()
    out["icc_subset"] = out["patient_id"].isin(chosen)
    return out.reset_index(drop=True)


def _feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c not in _ID + ["icc_subset", "image", "mask",
                                                          "label", "file_row", "resample_mask"]
            and pd.api.types.is_numeric_dtype(features[c])]


def reader_icc(features: pd.DataFrame, *, icc: str = "ICC2", threshold: float = 0.75
               ) -> pd.DataFrame:
    """Per-sequence, per-feature ICC between readers 1 and 2 over the ROIs both outlined.

    Cases of the ICC are ROIs (patient × vertebra) of the reliability subset.

    Returns
    -------
    DataFrame
        ``sequence, feature, icc, ci_low, ci_high, n, kept`` (``kept`` = ICC > threshold;
        undefined ICC is never kept).
    """
    from vcfnb.reliability import feature_icc

    cols = _feature_columns(features)
    f = features.copy()
    f["reader"] = f["reader"].astype(str)
    tables = []
    for seq, g in f.groupby("sequence", sort=True):
        a = g[g.reader == "1"].set_index(["patient_id", "roi"])[cols]
        b = g[g.reader == "2"].set_index(["patient_id", "roi"])[cols]
        if b.empty:
            continue
        both = a.index.intersection(b.index)
        t = feature_icc(a.loc[both], b.loc[both], icc=icc)
        t.insert(0, "sequence", seq)
        tables.append(t)
    if not tables:
        raise ValueError("no second-reader ROIs: the ICC needs reader 2 outlines")
    out = pd.concat(tables, ignore_index=True)
    out["kept"] = out["icc"].gt(threshold).fillna(False).astype(bool)
    return out


def icc_summary(icc_table: pd.DataFrame) -> pd.DataFrame:
    """Per sequence: features, median ICC (IQR), features kept."""
    g = icc_table.groupby("sequence")
    return pd.DataFrame({
        "features": g.size(),
        "defined_icc": g["icc"].count(),
        "median_icc": g["icc"].median(),
        "q1_icc": g["icc"].quantile(0.25),
        "q3_icc": g["icc"].quantile(0.75),
        "kept": g["kept"].sum(),
    }).reset_index()


def patient_features(features: pd.DataFrame, *, keep: pd.DataFrame | None = None,
                     how: str = "mean", reader: str = "1",
                     prefix: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per-patient feature table of one reader: mean over L1-L4, or one column per level.

    Parameters
    ----------
    features : DataFrame
        Output of :func:`vcfnb.features.extract` (id columns + features).
    keep : DataFrame, optional
        ICC table of :func:`reader_icc`; only its ``kept`` features (per sequence) are used.
    how : {"mean", "per-level"}
        Seed 002 averages the four vertebrae; ``per-level`` keeps ``<level>_`` columns.
    prefix : mapping
        Sequence → column prefix (default :data:`SEQUENCE_PREFIX`): columns are
        ``T1WI_original_glcm_Correlation`` etc.

    Returns
    -------
    DataFrame
        Index ``patient_id``; one column per (sequence, [level,] feature).
    """
    if how not in ("mean", "per-level"):
        raise ValueError(f"how must be 'mean' or 'per-level', got {how!r}")
    prefix = dict(prefix or SEQUENCE_PREFIX)
    cols = _feature_columns(features)
    f = features[features["reader"].astype(str) == str(reader)]
    blocks = []
    for seq, g in f.groupby("sequence", sort=True):
        use = cols
        if keep is not None:
            use = keep.loc[(keep["sequence"] == seq) & keep["kept"], "feature"].tolist()
        if not use:
            continue
        p = prefix.get(seq, str(seq))
        if how == "mean":
            w = g.groupby("patient_id")[use].mean()
            w.columns = [f"{p}_{c}" for c in use]
        else:
            w = g.pivot_table(index="patient_id", columns="roi", values=use)
            w.columns = [f"{p}_{lev}_{c}" for c, lev in w.columns]
        blocks.append(w)
    if not blocks:
        raise ValueError("no features left (none passed the ICC filter?)")
    out = pd.concat(blocks, axis=1)
    out.index = out.index.astype(str)
    out.index.name = "patient_id"
    return out


# ---------------------------------------------------------------------------------------------
# harmonisation
# ---------------------------------------------------------------------------------------------
def _eb_batch(z: np.ndarray, tol: float = 1e-4, max_iter: int = 200
              ) -> tuple[np.ndarray, np.ndarray]:
    """Parametric empirical-Bayes location/scale of one batch (ComBat, Johnson 2007)."""
    n = z.shape[0]
    g_hat = np.nanmean(z, axis=0)
    d_hat = np.nanvar(z, axis=0, ddof=1)
    g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
    m, s2 = d_hat.mean(), d_hat.var(ddof=1)
    a = (2 * s2 + m ** 2) / s2
    b = (m * s2 + m ** 3) / s2
    g_new, d_new = g_hat.copy(), d_hat.copy()
    for _ in range(max_iter):
        g_prev, d_prev = g_new, d_new
        g_new = (n * t2 * g_hat + d_prev * g_bar) / (n * t2 + d_prev)
        ssr = np.nansum((z - g_new) ** 2, axis=0)
        d_new = (b + 0.5 * ssr) / (n / 2.0 + a - 1.0)
        change = max(np.max(np.abs(g_new - g_prev) / (np.abs(g_prev) + 1e-12)),
                     np.max(np.abs(d_new - d_prev) / (d_prev + 1e-12)))
        if change < tol:
            break
    return g_new, d_new


def harmonise(features: pd.DataFrame, batch: pd.Series, *, reference: pd.Series,
              method: str = "combat", empirical_bayes: bool = True) -> pd.DataFrame:
    """Map other centres' features onto the training distribution (ComBat-style, label-free).

    The reference distribution (per-feature mean and SD) comes from the ``reference`` rows only
    (the training patients); each other batch's location and scale are estimated from that
    batch's own rows -- without labels, like any unsupervised preprocessing of a new site -- and
    (``empirical_bayes``) shrunk across features with ComBat's parametric priors. Rows of the
    reference's own batch are returned unchanged, so the fitted model and the internal test set
    do not move; only the external rows are mapped: ``x* = m_ref + s_ref · (z - γ*) / δ*`` with
    ``z = (x - m_ref) / s_ref``.

    Parameters
    ----------
    features : DataFrame
        Rows = patients (training, test, external), numeric columns.
    batch : Series
        Centre/scanner per row (same index).
    reference : Series of bool
        The rows defining the reference distribution (training rows).
    method : {"combat", "none"}
        ``none`` returns a copy.

    Returns
    -------
    DataFrame
        Same shape, index and columns.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(60, 5)), columns=list("abcde"))
    >>> site = pd.Series(["A"] * 40 + ["B"] * 20); X.loc[40:, :] = X.loc[40:, :] * 3 + 5
    >>> H = harmonise(X, site, reference=pd.Series(range(60)) < 30)
    >>> bool(abs(H.loc[40:, "a"].mean() - X.loc[:29, "a"].mean()) < 0.5)
    True
    """
    if method == "none":
        return features.copy()
    if method != "combat":
        raise ValueError(f"method must be 'none' or 'combat', got {method!r}")
    batch = pd.Series(batch, index=features.index).astype(str)
    reference = pd.Series(reference, index=features.index).astype(bool)
    if not reference.any():
        raise ValueError("no reference rows to harmonise onto")
    ref_batches = batch[reference].unique()
    if len(ref_batches) != 1:
        raise ValueError(f"reference rows span several batches: {list(ref_batches)}")
    X = features.to_numpy(float)
    ref = X[reference.to_numpy()]
    m_ref = np.nanmean(ref, axis=0)
    s_ref = np.nanstd(ref, axis=0, ddof=1)
    s_ref = np.where(s_ref > 0, s_ref, 1.0)
    out = X.copy()
    for b in batch.unique():
        if b == ref_batches[0]:
            continue
        rows = (batch == b).to_numpy()
        if rows.sum() < 3:
            raise ValueError(f"batch {b!r} has {rows.sum()} rows: too few to estimate its scale")
        z = (X[rows] - m_ref) / s_ref
        if empirical_bayes:
            g, d = _eb_batch(z)
        else:
            g, d = np.nanmean(z, axis=0), np.nanvar(z, axis=0, ddof=1)
        d = np.where(d > 0, d, 1.0)
        out[rows] = m_ref + s_ref * (z - g) / np.sqrt(d)
    return pd.DataFrame(out, index=features.index, columns=features.columns)


def harmonise_external(X: pd.DataFrame, cases: pd.DataFrame, *, method: str = "combat",
                       empirical_bayes: bool = True) -> pd.DataFrame:
    """:func:`harmonise` with the batches and reference taken from the cases table.

    Batch = the ``center`` column (or, without it, external vs internal from ``split``);
    reference = the training rows (``split == "train"``).
    """
    c = cases.set_index("patient_id").loc[X.index]
    if not c["split"].eq("external").any():
        return X.copy()  # nothing to harmonise
    if "center" in c and c["center"].notna().all():
        batch = c["center"].astype(str)
    else:
        batch = c["split"].eq("external").map({True: "external", False: "internal"})
    if c.loc[c["split"] == "train"].empty:
        raise ValueError("no training rows: split the cohort before harmonising")
    train_batches = batch[c["split"] == "train"].unique()
    if len(train_batches) != 1:
        raise ValueError(f"training rows come from several centres {list(train_batches)}; "
                         "harmonise needs one reference centre")
    return harmonise(X, batch, reference=c["split"].eq("train"), method=method,
                     empirical_bayes=empirical_bayes)


# ---------------------------------------------------------------------------------------------
# the radscore model
# ---------------------------------------------------------------------------------------------
class RadscoreModel(ClassifierMixin, BaseEstimator):
    """z-score → LASSO → radscore (linear combination) → logistic link, as in seed 002.

    The radscore is the LASSO logistic model's linear predictor on z-scored features
    (intercept + Σ coefficient × feature, the paper's formula); the model's probability is a
    logistic regression of the outcome on the radscore fitted on the same training rows (the
    "radiomic model established based on the radscores"), used for cutoffs, calibration,
    Hosmer-Lemeshow and decision curves. Everything is fitted on the rows passed to ``fit``.

    Parameters
    ----------
    lam : float, optional
        Fixed glmnet lambda (paper: 0.13); None = chosen by ``cv``-fold CV (``rule``).
    cv, rule, scoring, n_lambdas : LASSO CV settings (:class:`vcfnb.selection.LassoSelector`).
    min_features : int
        At least this many features kept (LASSO fallback on noise).
    random_state : int, optional

    Attributes
    ----------
    scaler_, lasso_, link_ : fitted StandardScaler, LassoSelector, LogisticRegression
    coef_ : Series (selected features, z-score scale), ``intercept_`` : float
    """

    def __init__(self, lam: float | None = None, cv: int = 10, rule: str = "min",
                 scoring: str = "roc_auc", n_lambdas: int = 25, min_features: int = 1,
                 random_state: int | None = None, compute_path: bool = True):
        self.lam = lam
        self.cv = cv
        self.rule = rule
        self.scoring = scoring
        self.n_lambdas = n_lambdas
        self.min_features = min_features
        self.random_state = random_state
        self.compute_path = compute_path

    def fit(self, X: pd.DataFrame, y) -> "RadscoreModel":
        import warnings

        X = pd.DataFrame(X)
        y = np.asarray(y).astype(int)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.classes_ = np.array([0, 1])
        self.scaler_ = StandardScaler().set_output(transform="pandas").fit(X)
        Z = self.scaler_.transform(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.lasso_ = LassoSelector(cv=self.cv, rule=self.rule, lam=self.lam,
                                        scoring=self.scoring, n_lambdas=self.n_lambdas,
                                        min_features=self.min_features,
                                        random_state=self.random_state,
                                        compute_path=self.compute_path).fit(Z, y)
        self.coef_ = self.lasso_.coef_.copy()
        self.intercept_ = float(self.lasso_.intercept_)
        score = self._radscore(Z)
        self.link_ = LogisticRegression(C=1e6, max_iter=1000).fit(
            score.reshape(-1, 1), y)
        return self

    def _radscore(self, Z: pd.DataFrame) -> np.ndarray:
        return self.intercept_ + Z[self.coef_.index].to_numpy(float) @ self.coef_.to_numpy(float)

    def radscore(self, X: pd.DataFrame) -> np.ndarray:
        """Radscore of each row (linear predictor of the LASSO model on z-scored features)."""
        Z = self.scaler_.transform(pd.DataFrame(X)[self.feature_names_in_])
        return self._radscore(Z)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.link_.predict_proba(self.radscore(X).reshape(-1, 1))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return self.radscore(X)

    def coefficients(self) -> pd.DataFrame:
        """``feature, coef`` of the selected features plus the intercept row, by |coef|."""
        t = pd.DataFrame({"feature": self.coef_.index, "coef": self.coef_.to_numpy()})
        t = t.reindex(t["coef"].abs().sort_values(ascending=False).index)
        return pd.concat([t, pd.DataFrame([{"feature": "intercept", "coef": self.intercept_}])],
                         ignore_index=True)

    def formula(self, digits: int = 3) -> str:
        """The radscore formula as the paper prints it (z-scored features)."""
        t = self.coefficients()
        parts = [f"{self.intercept_:.{digits}f}"]
        for f, c in zip(t["feature"], t["coef"]):
            if f == "intercept":
                continue
            parts.append(f"{'+' if c >= 0 else '-'} {abs(c):.{digits}f} × {f}")
        return "Radscore = " + " ".join(parts)


def model_groups(columns: Sequence[str], prefix: Mapping[str, str] | None = None
                 ) -> dict[str, list[str]]:
    """The three models' feature sets: T1WI, T2WI and T1WI+T2WI (by column prefix)."""
    prefix = dict(prefix or SEQUENCE_PREFIX)
    t1 = [c for c in columns if c.startswith(prefix["T1"] + "_")]
    t2 = [c for c in columns if c.startswith(prefix["T2"] + "_")]
    return {prefix["T1"]: t1, prefix["T2"]: t2, f"{prefix['T1']}+{prefix['T2']}": t1 + t2}


def fit_models(X: pd.DataFrame, cases: pd.DataFrame, *, outcome: str = "outcome",
               lam: float | None = None, cv: int = 10, rule: str = "1se",
               scoring: str = "deviance", random_state: int = 0) -> dict[str, RadscoreModel]:
    """Fit the three radscore models on the training rows (``cases.split == "train"``)."""
    c = cases.set_index("patient_id")
    train = c.index[c["split"] == "train"]
    y = c.loc[train, outcome].to_numpy(int)
    models = {}
    for name, cols in model_groups(list(X.columns)).items():
        if not cols:
            continue
        models[name] = RadscoreModel(lam=lam, cv=cv, rule=rule, scoring=scoring,
                                     random_state=random_state).fit(X.loc[train, cols], y)
    return models


def _scores(models: Mapping[str, RadscoreModel], X: pd.DataFrame, cases: pd.DataFrame,
            outcome: str) -> pd.DataFrame:
    c = cases.set_index("patient_id")
    rows = []
    for name, m in models.items():
        cols = list(m.feature_names_in_)
        prob = m.predict_proba(X[cols])[:, 1]
        rs = m.radscore(X[cols])
        rows.append(pd.DataFrame({"model": name, "patient_id": X.index,
                                  "split": c.loc[X.index, "split"].to_numpy(),
                                  "label": c.loc[X.index, outcome].to_numpy(int),
                                  "radscore": rs, "probability": prob}))
    return pd.concat(rows, ignore_index=True)


def models_table(models: Mapping[str, RadscoreModel]) -> pd.DataFrame:
    """Per model: features in, lambda (glmnet scale), features selected, the radscore formula."""
    return pd.DataFrame([{"model": n, "features_in": len(m.feature_names_in_),
                          "lambda": float(m.lasso_.lambda_), "selected": len(m.coef_),
                          "formula": m.formula()} for n, m in models.items()])


def radscore_table(models: Mapping[str, RadscoreModel], X: pd.DataFrame, cases: pd.DataFrame,
                   *, outcome: str = "outcome") -> pd.DataFrame:
    """Long table ``model, patient_id, split, label, radscore, probability`` for every patient."""
    return _scores(models, X, cases, outcome)


_SPLIT_NAMES = {"train": "training", "test": "validation", "external": "external validation"}


def performance_table(scores: pd.DataFrame, *, rng=None) -> pd.DataFrame:
    """Tables 2, 3 and 5: AUC (DeLong 95% CI), training-Youden cutoff, sensitivity, specificity,
    accuracy (plus PPV/NPV) per model and split, from :func:`radscore_table` output.

    The cutoff is on the model probability and fitted on the training split only.
    Columns: ``model, split, group, n, auc, ci_low, ci_high, auc_95ci, cutoff, sensitivity,
    specificity, accuracy, ppv, npv`` (+ counts).
    """
    rows = []
    for name, g in scores.groupby("model", sort=False):
        tr = g[g.split == "train"]
        extra = {s: (g.loc[g.split == s, "label"], g.loc[g.split == s, "probability"])
                 for s in ("external",) if (g.split == s).any()}
        te = g[g.split == "test"]
        rep = stats.model_report(tr["label"], tr["probability"],
                                 te["label"] if len(te) else None,
                                 te["probability"] if len(te) else None, model=name,
                                 extra=extra, rng=rng)
        rows.append(rep)
    t = pd.concat(rows, ignore_index=True).rename(columns={"auc_ci_low": "ci_low",
                                                           "auc_ci_high": "ci_high"})
    t.insert(2, "group", t["split"].map(_SPLIT_NAMES))
    keep = ["model", "split", "group", "n", "auc", "ci_low", "ci_high", "auc_95ci", "cutoff",
            "sensitivity", "specificity", "accuracy", "ppv", "npv", "sensitivity_count",
            "specificity_count", "accuracy_count"]
    return t[[k for k in keep if k in t.columns]]


def external_with_harmonisation(models: Mapping[str, RadscoreModel], X: pd.DataFrame,
                                X_harmonised: pd.DataFrame, cases: pd.DataFrame, *,
                                outcome: str = "outcome", rng=None) -> pd.DataFrame:
    """External-cohort performance of each model without and with harmonisation.

    Same models, same training cutoffs; only the external features differ. Columns ``model,
    harmonisation, n, auc, ci_low, ci_high, cutoff, sensitivity, specificity, accuracy,
    mean_probability, observed_rate, hl_p``.
    """
    rows = []
    for label, data in (("none", X), ("combat", X_harmonised)):
        sc = _scores(models, data, cases, outcome)
        perf = performance_table(sc, rng=rng)
        for _, r in perf[perf.split == "external"].iterrows():
            g = sc[(sc.model == r.model) & (sc.split == "external")]
            hl = stats.hosmer_lemeshow(g["label"], g["probability"], groups=min(10, len(g) // 4))
            rows.append({"model": r.model, "harmonisation": label, "n": r.n, "auc": r.auc,
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "cutoff": r.cutoff,
                         "sensitivity": r.sensitivity, "specificity": r.specificity,
                         "accuracy": r.accuracy,
                         "mean_probability": float(g["probability"].mean()),
                         "observed_rate": float(g["label"].mean()),
                         "hl_p": float(hl.p_value)})
    return pd.DataFrame(rows)


def calibration_tables(scores: pd.DataFrame, *, model: str, n_bins: int = 5, groups: int = 10
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibration curve (fig 8) and Hosmer-Lemeshow test per split for one model.

    Returns ``(curve, hl)``: ``curve`` = :func:`vcfnb.stats.calibration_curve` rows with a
    ``model`` column naming the split and its HL p; ``hl`` = ``split, statistic, dof, p_value``.
    """
    curves, hls = [], []
    g = scores[scores.model == model]
    for split in ("train", "test", "external"):
        s = g[g.split == split]
        if s.empty:
            continue
        hl = stats.hosmer_lemeshow(s["label"], s["probability"], groups=min(groups, len(s) // 4))
        hls.append({"model": model, "split": split, **hl.to_dict()})
        cc = stats.calibration_curve(s["label"], s["probability"], n_bins=n_bins)
        cc.insert(0, "model", f"{_SPLIT_NAMES[split]} (HL p = {hl.p_value:.2f})")
        curves.append(cc)
    return pd.concat(curves, ignore_index=True), pd.DataFrame(hls)


def decision_curves(scores: pd.DataFrame, *, split: str = "test",
                    thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Decision curves (fig 7) of every model on one split (+ treat all / treat none)."""
    g = scores[scores.split == split]
    y = g.groupby("patient_id")["label"].first()
    probs = {m: d.set_index("patient_id").loc[y.index, "probability"].to_numpy()
             for m, d in g.groupby("model", sort=False)}
    th = np.arange(0.01, 0.99, 0.01) if thresholds is None else thresholds
    return stats.decision_curve(y.to_numpy(), probs, th)


def delong_tables(scores: pd.DataFrame) -> pd.DataFrame:
    """Pairwise paired DeLong p-values between the models, per split (long table)."""
    rows = []
    for split, g in scores.groupby("split", sort=False):
        y = g.groupby("patient_id")["label"].first()
        sc = {m: d.set_index("patient_id").loc[y.index, "probability"].to_numpy()
              for m, d in g.groupby("model", sort=False)}
        names = list(sc)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                r = stats.delong_test(y.to_numpy(), sc[a], sc[b])
                rows.append({"split": split, "model_a": a, "model_b": b, "auc_a": r.auc_a,
                             "auc_b": r.auc_b, "z": r.z, "p_value": r.p_value})
    return pd.DataFrame(rows)


def wilcoxon_by_split(scores: pd.DataFrame, *, model: str) -> pd.DataFrame:
    """Radscore abnormal vs normal per split: Wilcoxon rank-sum (Mann-Whitney U) p (fig 5)."""
    from scipy.stats import mannwhitneyu

    rows = []
    g = scores[scores.model == model]
    for split, s in g.groupby("split", sort=False):
        a, b = s.loc[s.label == 1, "radscore"], s.loc[s.label == 0, "radscore"]
        res = mannwhitneyu(a, b, alternative="two-sided")
        rows.append({"model": model, "split": split, "median_abnormal": float(a.median()),
                     "median_normal": float(b.median()), "U": float(res.statistic),
                     "p_value": float(res.pvalue)})
    return pd.DataFrame(rows)


@dataclass
class PermutationResult:
    """Null AUCs (``null``: ``permutation, auc``), the observed validation AUC and the p-value."""

    null: pd.DataFrame
    observed: float
    p_value: float


def _null_auc(model, Xtr, ytr_perm, Xte, yte, state: int) -> float:
    from sklearn.metrics import roc_auc_score

    m = clone(model).set_params(random_state=state, compute_path=False).fit(Xtr, ytr_perm)
    return float(roc_auc_score(yte, m.radscore(Xte)))


def permutation_test(X: pd.DataFrame, cases: pd.DataFrame, *, model: RadscoreModel,
                     n_permutations: int = 20, outcome: str = "outcome", rng=None,
                     n_jobs: int = 1) -> PermutationResult:
    """Whole-pipeline label-permutation test of one radscore model on the validation split.

    The training labels are shuffled, the whole pipeline (z-score, LASSO with its CV, link) is
    refitted and the validation AUC recorded; ``p = (1 + #(null >= observed)) / (1 + n)``.
    Permutations and seeds are drawn from ``rng`` up front, so the result does not depend on
    ``n_jobs`` (permutations run in parallel with joblib).
    """
    from joblib import Parallel, delayed
    from sklearn.metrics import roc_auc_score

    g = _rng(rng)
    c = cases.set_index("patient_id")
    tr = c.index[c.split == "train"]
    te = c.index[c.split == "test"]
    cols = list(getattr(model, "feature_names_in_", X.columns))  # a fitted model: its features
    ytr, yte = c.loc[tr, outcome].to_numpy(int), c.loc[te, outcome].to_numpy(int)
    fitted = clone(model).fit(X.loc[tr, cols], ytr)
    observed = float(roc_auc_score(yte, fitted.radscore(X.loc[te, cols])))
    jobs = [(int(g.integers(0, 2**31 - 1)), g.permutation(ytr)) for _ in range(int(n_permutations))]
    aucs = Parallel(n_jobs=n_jobs)(delayed(_null_auc)(model, X.loc[tr, cols], yp, X.loc[te, cols],
                                                      yte, state) for state, yp in jobs)
    null = pd.DataFrame({"permutation": np.arange(1, len(aucs) + 1, dtype=int),
                         "auc": np.asarray(aucs, float)})
    p = (1 + int((null["auc"] >= observed).sum())) / (1 + len(null))
    return PermutationResult(null, observed, float(p))


def record_permutation(run, result: PermutationResult, *, model: str,
                       performance: pd.DataFrame) -> None:
    """Add the permutation p-value and null mean to the model's test entry of metrics.json."""
    r = performance[(performance.model == model) & (performance.split == "test")].iloc[0]
    run.metric(model, "test", auc=r.auc, ci_low=r.ci_low, ci_high=r.ci_high, n=r.n,
               permutation_p=float(result.p_value),
               permutation_null_mean=float(result.null["auc"].mean()) if len(result.null)
               else float("nan"),
               permutations=int(len(result.null)))


def matrix_summary(X: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Patients per split and feature columns per sequence of the per-patient table."""
    split = cases.set_index("patient_id").loc[X.index, "split"]
    prefixes = pd.Series([c.split("_", 1)[0] for c in X.columns]).value_counts()
    return pd.DataFrame([{"patients": len(X), **{f"patients_{k}": int(v) for k, v in
                                                   split.value_counts().items()},
                          **{f"features_{k}": int(v) for k, v in prefixes.items()},
                          "features": X.shape[1]}])


def harmonisation_shift(X: pd.DataFrame, X_harmonised: pd.DataFrame, cases: pd.DataFrame
                        ) -> pd.DataFrame:
    """How far the external centre's features sit from the training distribution, before and
    after harmonisation: median over features of |standardised mean difference| and of
    |log SD ratio| (external vs training)."""
    split = cases.set_index("patient_id").loc[X.index, "split"]
    tr, ext = (split == "train").to_numpy(), (split == "external").to_numpy()
    rows = []
    for label, data in (("none", X), ("combat", X_harmonised)):
        a, b = data.to_numpy(float)[tr], data.to_numpy(float)[ext]
        sd = np.nanstd(a, axis=0, ddof=1)
        ok = sd > 0
        smd = np.abs(np.nanmean(b, 0) - np.nanmean(a, 0))[ok] / sd[ok]
        ratio = np.abs(np.log(np.nanstd(b, axis=0, ddof=1)[ok] / sd[ok]))
        rows.append({"harmonisation": label, "external_patients": int(ext.sum()),
                     "median_abs_smd": float(np.nanmedian(smd)) if ext.any() else np.nan,
                     "median_abs_log_sd_ratio": float(np.nanmedian(ratio)) if ext.any()
                     else np.nan,
                     "features_smd_gt_0.5": int(np.sum(smd > 0.5))})
    return pd.DataFrame(rows)


def selected_features(model: RadscoreModel, X: pd.DataFrame, cases: pd.DataFrame, *,
                      split: str = "train", outcome: str = "outcome") -> pd.DataFrame:
    """The model's selected features (raw values) of one split plus ``label`` (figs 3 and 4)."""
    c = cases.set_index("patient_id")
    ids = c.index[c.split == split]
    out = X.loc[ids, list(model.coef_.index)].copy()
    out["label"] = c.loc[ids, outcome].astype(int).to_numpy()
    return out


def roc_curves(scores: pd.DataFrame, *, split: str) -> dict:
    """``{model: (y_true, probability)}`` of one split, for :func:`vcfnb.plots.plot_roc`."""
    g = scores[scores.split == split]
    return {m: (d["label"].to_numpy(), d["probability"].to_numpy())
            for m, d in g.groupby("model", sort=False)}


def extra_numbers(hosmer_lemeshow: pd.DataFrame, *, model: str) -> dict:
    """This run's Hosmer-Lemeshow p-values keyed like the paper numbers (``model/split/hl_p``)."""
    return {f"{model}/{r.split}/hl_p": float(r.p_value) for r in hosmer_lemeshow.itertuples()}


def require_outcome(run, cases: pd.DataFrame, *, outcome: str = "outcome") -> pd.DataFrame:
    """Stop the run cleanly (``run.stop``) when the cohort has no usable outcome labels."""
    if outcome not in cases or cases[outcome].isna().all():
        run.stop(f"the cohort has no {outcome!r} labels (no DXA results): feature and "
                 "reliability tables are complete; the outcome model cannot be fitted")
    y = cases[outcome].dropna()
    if y.nunique() < 2:
        run.stop(f"the outcome {outcome!r} has a single class: no model can be fitted")
    return cases


# ---------------------------------------------------------------------------------------------
# the real lumbar MRI cohort (../shared/data/lumbar_mri)
# ---------------------------------------------------------------------------------------------
#: VB1 exam → (subject, sequence), from the data's README (exam names AKa3, AKa4, AKs6, ...)
VB1_EXAMS = {"02": ("AKa", "T1"), "03": ("AKa", "STIR"), "06": ("AKs", "T1"),
             "07": ("AKs", "STIR"), "08": ("AKs", "T1"), "10": ("DzZ", "T1"),
             "11": ("DzZ", "T2"), "12": ("F02", "T2"), "15": ("S15", "T2"),
             "16": ("S16", "T2"), "17": ("S17", "T2")}


def perturbed_reader(mask: np.ndarray, rng=None, *, p_erode: float = 1 / 3,
                     p_dilate: float = 1 / 3, jitter: float = 0.3, sigma: float = 1.5,
                     axis: int = 0) -> np.ndarray:
    """A simulated second reader's outline: ±1-voxel erosion/dilation plus a boundary jitter.

    Per connected slice (2D along ``axis``, how sagittal ROIs are drawn) the outline is eroded
    (probability ``p_erode``), dilated (``p_dilate``) or kept by one voxel, then shifted by a
    smooth random field of about ``jitter`` voxels (:func:`vcfnb.synth._phantom.perturb_mask`).
    Never returns an empty slice where the input had one.

    Examples
    --------
    >>> m = np.zeros((3, 20, 20), bool); m[:, 5:15, 5:15] = True
    >>> r = perturbed_reader(m, 0)
    >>> bool(r.any()) and r.shape == m.shape
    True
    """
    from vcfnb.synth._phantom import perturb_mask

    g = _rng(rng)
    m = np.asarray(mask, bool)
    out = np.zeros_like(m)
    for k in range(m.shape[axis]):
        sl = np.take(m, k, axis=axis)
        if not sl.any():
            continue
        u = g.random()
        if u < p_erode:
            new = ndimage.binary_erosion(sl)
            new = new if new.sum() >= 0.5 * sl.sum() else sl
        elif u < p_erode + p_dilate:
            new = ndimage.binary_dilation(sl)
        else:
            new = sl
        new = perturb_mask(new, g, jitter=jitter, sigma=sigma)
        idx = [slice(None)] * m.ndim
        idx[axis] = k
        out[tuple(idx)] = new if new.any() else sl
    return out


def _levels_vb3(arr: np.ndarray) -> dict[str, int]:
    present = set(int(v) for v in np.unique(arr) if v)
    return {lev: i + 1 for i, lev in enumerate(LEVELS) if i + 1 in present}


def _levels_by_position(arr: np.ndarray, lowest: str, si_axis: int = 1) -> dict[str, int]:
    """Map L1-L4 to label values: bodies ordered by centroid, most caudal first."""
    labels = [int(v) for v in np.unique(arr) if v]
    cent = ndimage.center_of_mass(np.ones_like(arr), arr, labels)
    order = [lab for _, lab in sorted(((c[si_axis], lab) for c, lab in zip(cent, labels)),
                                      reverse=True)]  # rows run superior->inferior
    names = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8"]
    start = names.index(lowest)
    assigned = {names[start + i]: lab for i, lab in enumerate(order) if start + i < len(names)}
    return {lev: assigned[lev] for lev in LEVELS if lev in assigned}


def lumbar_mri_cohort(src: str | Path, out_dir: str | Path, rng=None, *,
                      vb1_lowest: str = "S1", mid_neighbours: int = 1,
                      exclude_cortex_mm: float = 1.0, margin: int = 8) -> Path:
    """Build a contract cohort from the public lumbar MRI sets VB3 and VB1.

    For each exam and each of L1-L4 (VB3: labels 1-4; VB1: levels assigned by position, the most
    caudal segmented body being ``vb1_lowest``, S1 by inspection of the mid-sagittal slices):
    the vertebral body's largest-area sagittal slice and ``mid_neighbours`` slices on each side,
    cortex excluded by an in-plane erosion of ``exclude_cortex_mm``; reader 1 = that outline,
    reader 2 = :func:`perturbed_reader` of it. Images are cropped to the L1-L4 box plus
    ``margin`` voxels (geometry kept). No outcome exists: ``cases.csv`` has no ``outcome``
    column.

    Parameters
    ----------
    src : path
        The ``lumbar_mri`` folder (with ``VB1/`` and ``VB3/``).
    out_dir : path
        Cohort folder to write (``cases.csv``, ``rois.csv``, ``images/``, ``masks/``,
        ``cohort.json`` with ``"simulated": false`` and the second reader described).
    rng : int or Generator
        Seeds the second reader.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from vcfnb import io

    src, out = Path(src), Path(out_dir)
    if not (src / "VB3").is_dir() and not (src / "VB1").is_dir():
        raise FileNotFoundError(f"{src}: no VB1/ or VB3/ folder (the lumbar_mri data set)")
    g = _rng(rng)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cohort.json").unlink(missing_ok=True)
    cases, rois, problems = [], [], []
    exams = []
    for f in sorted((src / "VB3").glob("*_image.nii.gz")):
        exams.append(("VB3", f.name[:2], f"VB3-{f.name[:2]}", "WATER", f"VB3-{f.name[:2]}"))
    for f in sorted((src / "VB1").glob("*_image.nii.gz")):
        subj, seq = VB1_EXAMS.get(f.name[:2], (f"VB1-{f.name[:2]}", "MR"))
        exams.append(("VB1", f.name[:2], f"VB1-{f.name[:2]}", seq, subj))
    for dataset, code, pid, seq, subject in exams:
        img_path = src / dataset / f"{code}_image.nii.gz"
        msk_path = src / dataset / f"{code}_mask.nii.gz"
        img = io.read_image(img_path)
        msk = io.read_image(msk_path)
        arr = sitk.GetArrayFromImage(msk)
        levels = _levels_vb3(arr) if dataset == "VB3" else _levels_by_position(arr, vb1_lowest)
        if not levels:
            problems.append(f"{dataset}/{code}: no L1-L4 bodies found")
            continue
        spacing = np.asarray(img.GetSpacing())[::-1]  # array order
        r1 = np.zeros(arr.shape, np.uint8)
        r2 = np.zeros(arr.shape, np.uint8)
        ero = [max(0, int(round(exclude_cortex_mm / s))) for s in spacing]
        for i, lev in enumerate(LEVELS):
            if lev not in levels:
                continue
            body = arr == levels[lev]
            area = body.sum(axis=(1, 2))
            mid = int(np.argmax(area))
            lo, hi = max(mid - mid_neighbours, 0), min(mid + mid_neighbours, arr.shape[0] - 1)
            for k in range(lo, hi + 1):
                sl = body[k]
                if ero[1] or ero[2]:
                    st = np.ones((2 * ero[1] + 1, 2 * ero[2] + 1), bool)
                    inner = ndimage.binary_erosion(sl, st)
                    sl = inner if inner.sum() >= 20 else sl
                r1[k][sl] = i + 1
            other = perturbed_reader(r1 == i + 1, g)
            r2[other & (r2 == 0)] = i + 1
        box = np.argwhere(r1 > 0)
        lo = np.maximum(box.min(0) - margin, 0)
        hi = np.minimum(box.max(0) + margin + 1, arr.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        idx = [int(v) for v in lo[::-1]]
        size = [int(v) for v in (hi - lo)[::-1]]
        img_c = sitk.RegionOfInterest(img, size, idx)
        files = {}
        for reader, m in ((1, r1), (2, r2)):
            mk = sitk.GetImageFromArray(m[crop])
            mk.CopyInformation(img_c)
            files[reader] = f"masks/{pid}_reader{reader}.nii.gz"
            (out / "masks").mkdir(exist_ok=True)
            sitk.WriteImage(mk, str(out / files[reader]), useCompression=True)
        (out / "images").mkdir(exist_ok=True)
        img_rel = f"images/{pid}_{seq}.nii.gz"
        sitk.WriteImage(sitk.Cast(img_c, sitk.sitkFloat32), str(out / img_rel),
                        useCompression=True)
        cases.append({"patient_id": pid, "subject": subject, "dataset": dataset,
                      "exam": code, "sequence": seq, "levels": len(levels), "split": "",
                      "center": dataset})
        for i, lev in enumerate(LEVELS):
            if lev not in levels:
                continue
            for reader in (1, 2):
                rois.append({"patient_id": pid, "roi": lev, "sequence": seq, "reader": reader,
                             "image": img_rel, "mask": files[reader], "label": i + 1})
    io.write_table(pd.DataFrame(cases), out / "cases.csv")
    io.write_table(pd.DataFrame(rois), out / "rois.csv")
    io.write_text(
        "# Real lumbar MRI cohort (no outcome labels)\n\n"
        "Built by vcfnb.studies.osteoporosis.lumbar_mri_cohort from the public lumbar_mri data "
        "(VB3: MyoSegmenTUM water images, L1-L4 = labels 1-4; VB1: SpineWeb exams, levels by "
        f"position with the most caudal body = {vb1_lowest}). Reader 1 = the published "
        "outline on the mid-sagittal slice +/- "
        f"{mid_neighbours}, cortex excluded ({exclude_cortex_mm} mm); reader 2 is SIMULATED "
        "(+/-1 voxel erosion/dilation and a smooth boundary jitter). No DXA results exist.\n",
        out / "README.md")
    io.write_json({"simulated": False, "source": "lumbar_mri (VB1, VB3)",
                   "second_reader": "simulated by mask perturbation",
                   "vb1_lowest": vb1_lowest, "problems": problems}, out / "cohort.json")
    return out


def ensure_lumbar_cohort(source: str, cohort_dir: str, *, seed: int = 0) -> str:
    """Build the real lumbar cohort into ``cohort_dir`` when ``source`` is given (else no-op).

    Relative paths are taken from the project root. An existing complete cohort built from the
    same source is reused. Returns ``cohort_dir`` unchanged (the resolve cell then loads it).
    """
    if not source:
        return cohort_dir
    from vcfnb.report import project_root

    root = project_root()
    src = Path(source) if Path(source).is_absolute() else root / source
    if not src.is_dir():
        raise FileNotFoundError(f"lumbar MRI source {source!r} not found (looked in {src})")
    if not cohort_dir:
        raise ValueError("cohort_dir must name the folder to build the real lumbar cohort in")
    out = Path(cohort_dir) if Path(cohort_dir).is_absolute() else root / cohort_dir
    meta = out / "cohort.json"
    if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("source_seed") == seed:
        return cohort_dir
    lumbar_mri_cohort(src, out, seed)
    from vcfnb import io

    io.write_json({**json.loads(meta.read_text(encoding="utf-8")), "source_seed": seed}, meta)
    return cohort_dir
