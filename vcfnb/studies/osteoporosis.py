"""Study rules of seed 002 (``notebooks/osteoporosis_mri.ipynb``): bone mass from lumbar MRI.

Only what is specific to this study lives here; the notebook calls the generic layers
(:mod:`vcfnb.features`, :mod:`vcfnb.reliability`, :mod:`vcfnb.harmonize`, :mod:`vcfnb.models`,
:mod:`vcfnb.stats`) directly:

* what a cohort must hold (:data:`REQUIREMENTS`, checked before any extraction);
* the DXA rule that defines the outcome (:func:`dxa_rule`, :func:`label_cases`), which says how
  many patients it labelled and never falls back to another column;
* the split: a ``split`` column the cohort gives is the split used (:func:`split_internal`);
  only without one is a stratified 7:3 split drawn;
* which ROIs to extract (reader 1 of everyone, reader 2 of a reliability subset when the cohort
  has a second reader) and the three models T1WI, T2WI, T1WI+T2WI (:func:`model_groups`);
* the radscore's probability link fitted on out-of-fold radscores, and which chain scores new
  patients (full-training model or mean of the fold models, after a scale check:
  :func:`fit_radscore`, :func:`scale_sentence`).

The real lumbar MRI cohort is built by :func:`vcfnb.sources.ensure_lumbar_cohort`.

References
----------
Seed 002: radiomics of lumbar T1WI/T2WI for abnormal bone mass (DXA), external validation.
ISCD official positions (T-score from 50 years, Z-score below).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vcfnb import stats
from vcfnb.contract import Column, Folds, Requirements
from vcfnb.models import study_split
from vcfnb.rng import generator

__all__ = [
    "REQUIREMENTS", "LEVELS", "SEQUENCE_PREFIX", "dxa_rule", "dxa_summary", "label_cases",
    "outcome_source", "given_split", "split_internal", "split_counts", "baseline_tables",
    "extraction_settings", "rois_for_extraction", "model_groups", "selected_features",
    "wilcoxon_by_split", "fit_radscore", "scale_sentence", "linked_test_auc", "roi_slices",
    "harmonisation_batches", "harmonisation_shift",
]

LEVELS = ("L1", "L2", "L3", "L4")
#: feature-name prefix per sequence (the paper prefixes T1WI features with 1 and T2WI with 2)
SEQUENCE_PREFIX = {"T1": "T1WI", "T2": "T2WI"}
_DXA = "outcome_from_dxa"

REQUIREMENTS = Requirements(
    study="osteoporosis_mri",
    design="holdout",
    sequences=("{sequences}",),
    rois=LEVELS,
    readers={"1": "every step"},
    optional_readers={"2": "the reader ICC filter (features with ICC above icc_threshold)"},
    columns=(
        Column("{outcome}", "binary", needed_for="the outcome", outcome=True,
               when=f"{_DXA}=False"),
        Column("age", "numeric", needed_for="the DXA rule (T- or Z-score by age)",
               outcome=True, when=_DXA),
        Column("t_score", "numeric", needed_for="the DXA rule (patients aged >= dxa_age_cutoff)",
               outcome=True, when=_DXA, missing_ok=True),
        Column("z_score", "numeric", needed_for="the DXA rule (patients younger than "
               "dxa_age_cutoff)", outcome=True, when=_DXA, missing_ok=True),
    ),
    folds=(Folds("cv_folds", on="train"),
           Folds("lasso_cv", on="train", within=("cv_folds",), when="lasso_lambda=0.0")),
    min_per_class=2,
    test_size_param="test_size",
    main_models=("T1WI+T2WI",),
    notes=("`{sequences}`: the sequences the `sequences` parameter names (default `T1`, `T2`); "
           "every patient needs L1-L4 on each (in a features-only run, on one of them).",
           "A `split` column (train/test/external) is the split used; left empty for the "
           "internal patients, a stratified split of `test_size` is drawn.",
           "With `outcome_from_dxa` (default) the outcome is derived from `age`, `t_score` and "
           "`z_score`; set it to false to take the `outcome` column as it is."),
)


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
    The paper's "women and patients aged > 50 years" is read as the ISCD convention; menopause
    status is not in the cohort, so age alone selects the reference.

    Returns
    -------
    DataFrame
        ``patient_id, age, t_score, z_score, reference ("T"|"Z"), score, dxa_class
        (osteoporosis | low bone mass | abnormal (Z) | normal | unknown), abnormal (0/1, NaN when
        unknown), cohort_outcome`` (the cohort's own outcome column when present) and
        ``agrees``. A missing DXA column makes every row ``unknown``.

    Examples
    --------
    >>> c = pd.DataFrame({"patient_id": ["a", "b", "c"], "age": [70, 40, 60],
    ...                   "t_score": [-2.7, -1.5, -0.5], "z_score": [-1.0, -2.3, 0.2]})
    >>> dxa_rule(c)[["dxa_class", "abnormal"]].values.tolist()
    [['osteoporosis', 1.0], ['abnormal (Z)', 1.0], ['normal', 0.0]]
    """
    n = len(cases)

    def col(name):
        return (pd.to_numeric(cases[name], errors="coerce").to_numpy(float) if name in cases
                else np.full(n, np.nan))

    age, t, z = col(age_col), col(t_col), col(z_col)
    out = pd.DataFrame({"patient_id": cases["patient_id"].astype(str).to_numpy(),
                        "age": age, "t_score": t, "z_score": z})
    use_t = age >= age_cutoff
    out["reference"] = np.where(np.isnan(age), "", np.where(use_t, "T", "Z"))
    score = np.where(use_t, t, z)
    out["score"] = score
    cls = np.full(n, "unknown", dtype=object)
    ok = ~np.isnan(score) & ~np.isnan(age)
    cls[ok & use_t & (t <= osteoporosis_threshold)] = "osteoporosis"
    cls[ok & use_t & (t > osteoporosis_threshold) & (t < t_threshold)] = "low bone mass"
    cls[ok & use_t & (t >= t_threshold)] = "normal"
    cls[ok & ~use_t & (z < z_threshold)] = "abnormal (Z)"
    cls[ok & ~use_t & (z >= z_threshold)] = "normal"
    out["dxa_class"] = cls
    out["abnormal"] = np.where(cls == "unknown", np.nan, (cls != "normal").astype(float))
    out["cohort_outcome"] = col(outcome)
    out["agrees"] = out["abnormal"] == out["cohort_outcome"]
    return out


def dxa_summary(rule: pd.DataFrame) -> pd.DataFrame:
    """Counts of DXA classes by reference score, with agreement with the cohort's outcome."""
    g = rule.groupby(["reference", "dxa_class"], dropna=False)
    return g.agg(patients=("patient_id", "size"),
                 abnormal=("abnormal", lambda s: int(np.nansum(s))),
                 agree_with_cohort_outcome=("agrees", "sum")).reset_index()


def label_cases(cases: pd.DataFrame, rule: pd.DataFrame, *, outcome: str = "outcome",
                from_dxa: bool = True) -> pd.DataFrame:
    """Cases with the study outcome: the DXA rule's result (``from_dxa``) or the cohort's column.

    Never falls back from one source to the other: with ``from_dxa`` the outcome column is the
    rule's result (all NaN when it labelled nobody); rows it could not label are dropped. Adds
    ``dxa_class``.

    Examples
    --------
    >>> c = pd.DataFrame({"patient_id": ["a", "b"], "age": [70, 60], "T_score": [-2.7, 0.0],
    ...                   "z_score": [-1.0, 0.5], "outcome": [1, 0]})
    >>> bool(label_cases(c, dxa_rule(c))["outcome"].isna().all())  # misnamed T-score: no label
    True
    """
    out = cases.copy()
    out["patient_id"] = out["patient_id"].astype(str)
    r = rule.set_index("patient_id")
    out["dxa_class"] = out["patient_id"].map(r["dxa_class"])
    if from_dxa:
        out[outcome] = out["patient_id"].map(r["abnormal"])
    if outcome not in out or out[outcome].isna().all():
        out[outcome] = np.nan  # no labels at all: keep every row (the run stops before modelling)
        return out.reset_index(drop=True)
    out = out[out[outcome].notna()].copy()
    out[outcome] = out[outcome].astype(int)
    return out.reset_index(drop=True)


def outcome_source(cases: pd.DataFrame, labelled: pd.DataFrame, rule: pd.DataFrame, *,
                   outcome: str = "outcome", from_dxa: bool = True) -> str:
    """One sentence for the report: where the outcome came from and how many it labelled."""
    n, k = len(cases), int(labelled[outcome].notna().sum()) if outcome in labelled else 0
    if not from_dxa:
        return (f"The outcome is the cohort's `{outcome}` column as given (`outcome_from_dxa` is "
                f"off): {k} of {n} patients labelled, {int(labelled[outcome].sum()) if k else 0} "
                "abnormal.")
    known = rule[rule["abnormal"].notna()]
    if known.empty:
        return (f"The DXA rule labelled none of the {n} patients (no usable `age`, `t_score`, "
                "`z_score` values): this run has no outcome.")
    agree = known["agrees"].sum() if known["cohort_outcome"].notna().any() else None
    text = (f"The outcome is derived from DXA by the rule above: it labelled {len(known)} of {n} "
            f"patients ({int(known['abnormal'].sum())} abnormal, "
            f"{int((known['abnormal'] == 0).sum())} normal); {n - len(known)} without usable "
            "DXA values are excluded.")
    if agree is not None:
        text += f" It agrees with the cohort's `{outcome}` column for {int(agree)} of them."
    return text


# ---------------------------------------------------------------------------------------------
# the split
# ---------------------------------------------------------------------------------------------
def split_internal(cases: pd.DataFrame, *, outcome: str = "outcome", test_size: float = 0.3,
                   random_state: int = 0) -> pd.DataFrame:
    """The internal train/test split: the cohort's own when it gives one, else drawn.

    :func:`vcfnb.models.study_split` (design ``holdout``) validates the ``split`` column (train,
    test, external or empty; given for every internal patient or for none, never re-drawn) and,
    without one, splits the non-external patients ``train_test_split(stratify=outcome,
    test_size=test_size, random_state=...)`` (one row per patient). External rows keep
    ``split="external"``.

    Examples
    --------
    >>> c = pd.DataFrame({"patient_id": list("abcd"), "outcome": [0, 1, 0, 1],
    ...                   "split": ["train", "train", "test", "test"]})
    >>> split_internal(c)["split"].tolist()
    ['train', 'train', 'test', 'test']
    """
    split = study_split(cases, outcome=outcome, design="holdout", test_size=test_size,
                        random_state=random_state)
    return cases.assign(split=split.to_numpy())


def given_split(cases: pd.DataFrame) -> bool:
    """Whether the cohort gives the internal split (some non-external row says train or test;
    :func:`split_internal` refuses a split given for some internal patients only)."""
    s = (cases["split"] if "split" in cases else pd.Series("", index=cases.index)
         ).fillna("").astype(str).str.strip().str.lower()
    return bool(s[s != "external"].ne("").any())


_SPLIT_NAMES = {"train": "training", "test": "validation", "external": "external validation"}


def split_counts(cases: pd.DataFrame, *, outcome: str = "outcome") -> pd.DataFrame:
    """Patients per split and class (normal = 0, abnormal = 1)."""
    t = cases.groupby(["split", outcome]).size().unstack(fill_value=0)
    t = t.reindex(columns=[0, 1], fill_value=0)
    t.columns = ["normal", "abnormal"]
    t["total"] = t.sum(axis=1)
    return t.reindex([s for s in ("train", "test", "external") if s in t.index]).reset_index()


def baseline_tables(cases: pd.DataFrame, *, outcome: str = "outcome",
                    variables: Sequence[str] = ("age", "sex", "height_cm", "weight_kg", "bmi"),
                    rng=None) -> pd.DataFrame:
    """Tables 1 and 4: clinical characteristics by group in each split
    (:func:`vcfnb.stats.baseline_table`); empty when the cohort has none of ``variables``."""
    rows = []
    variables = [v for v in variables if v in cases]
    for split in ("train", "test", "external"):
        d = cases[cases["split"] == split]
        if not variables or d.empty or d[outcome].nunique() < 2:
            continue
        t = stats.baseline_table(d, outcome, variables,
                                 categorical=[v for v in ("sex",) if v in variables], rng=rng)
        t = t.rename(columns={"0": "normal", "1": "abnormal"})
        t.insert(0, "split", _SPLIT_NAMES[split])
        rows.append(t)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["split"])


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------
def extraction_settings(settings: str | Mapping = "osteoporosis_mri", *,
                        image_types: Sequence[str] = (), feature_classes: Sequence[str] = (),
                        overrides: Mapping | None = None,
                        log_sigma: Sequence[float] = ()) -> dict:
    """The study's pyradiomics settings: a packaged/user settings file narrowed for this run.

    ``image_types`` / ``feature_classes`` keep a subset (empty = all); ``overrides`` update
    the file's ``setting`` section key by key (the other settings stay); ``log_sigma`` replaces
    the LoG sigmas (mm). The paper's named features (``boxsigmaimage_glcm_Correlation``,
    ``log-sigma-4-0-mm-3D_firstorder_Median``, ...) need BoxSigma, AdditiveGaussianNoise, LoG.
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


def rois_for_extraction(rois: pd.DataFrame, cases: pd.DataFrame, *, reliability_patients: int = 0,
                        sequences: Sequence[str] = ("T1", "T2"), levels: Sequence[str] = LEVELS,
                        rng=None) -> pd.DataFrame:
    """The ROI rows to extract: reader 1 of every patient, reader 2 of a reliability subset.

    ``reliability_patients`` = number of (non-external) patients with a second reader drawn
    with ``rng`` for the ICC step (0 = all of them; none when the cohort has no reader 2).
    Adds a column ``icc_subset``.
    """
    r = rois[rois["patient_id"].isin(cases["patient_id"].astype(str))
             & rois["sequence"].isin(list(sequences)) & rois["roi"].isin(list(levels))].copy()
    r["reader"] = r["reader"].astype(str)
    second = set(r.loc[r["reader"] == "2", "patient_id"])
    split = cases.get("split", pd.Series("", index=cases.index)).fillna("")
    pool = sorted(p for p in cases.loc[split.ne("external"), "patient_id"].astype(str)
                  if p in second)
    if reliability_patients and reliability_patients < len(pool):
        chosen = set(generator(rng).choice(pool, reliability_patients, replace=False))
    else:
        chosen = set(pool)
    keep = (r["reader"] == "1") | ((r["reader"] == "2") & r["patient_id"].isin(chosen))
    out = r.loc[keep].copy()
    out["icc_subset"] = out["patient_id"].isin(chosen)
    return out.reset_index(drop=True)


def roi_slices(rois: pd.DataFrame, *, axis: int = 0) -> pd.DataFrame:
    """How many slices along array ``axis`` (pyradiomics' ``force2Ddimension``) each ROI spans:
    ``patient_id, roi, sequence, reader, slices`` (masks read with :func:`vcfnb.io.read_image`)."""
    import SimpleITK as sitk

    from vcfnb import io

    rows = []
    for mask, g in rois.groupby("mask", sort=False):
        arr = sitk.GetArrayFromImage(io.read_image(mask))
        other = tuple(i for i in range(arr.ndim) if i != axis)
        for r in g.itertuples():
            lab = int(getattr(r, "label", 1) or 1)
            rows.append({"patient_id": r.patient_id, "roi": r.roi, "sequence": r.sequence,
                         "reader": r.reader, "slices": int((arr == lab).any(axis=other).sum())})
    return pd.DataFrame(rows)


def model_groups(columns: Sequence[str], models: Mapping[str, Sequence[str]] | None = None
                 ) -> dict[str, list[str]]:
    """Each model's feature columns: ``models`` maps a model to the column prefixes it uses
    (default the paper's T1WI, T2WI and T1WI+T2WI); models without columns are left out.

    Examples
    --------
    >>> model_groups(["T1WI_a", "T2WI_b", "T1WI_c"])
    {'T1WI': ['T1WI_a', 'T1WI_c'], 'T2WI': ['T2WI_b'], 'T1WI+T2WI': ['T1WI_a', 'T1WI_c', 'T2WI_b']}
    """
    models = models or {"T1WI": ["T1WI"], "T2WI": ["T2WI"], "T1WI+T2WI": ["T1WI", "T2WI"]}
    out = {}
    for name, prefixes in models.items():
        cols = [c for p in prefixes for c in columns if c.startswith(f"{p}_")]
        if cols:
            out[name] = cols
    return out


def selected_features(coef: pd.Series, X: pd.DataFrame, cases: pd.DataFrame, *,
                      split: str = "train", outcome: str = "outcome") -> pd.DataFrame:
    """Raw values of the selected features (``coef`` index) on one split plus ``label``."""
    c = cases.set_index("patient_id")
    ids = c.index[c.split == split]
    out = X.loc[ids, list(coef.index)].copy()
    out["label"] = c.loc[ids, outcome].astype(int).to_numpy()
    return out


def wilcoxon_by_split(scores: pd.DataFrame, *, model: str) -> pd.DataFrame:
    """Radscore abnormal vs normal per split (fig 5): Wilcoxon rank-sum (Mann-Whitney U)."""
    from scipy.stats import mannwhitneyu

    rows = []
    for split, s in scores[scores.model == model].groupby("split", sort=False):
        a, b = s.loc[s.y_true == 1, "score"], s.loc[s.y_true == 0, "score"]
        if a.empty or b.empty:
            continue
        res = mannwhitneyu(a, b, alternative="two-sided")
        rows.append({"model": model, "split": split, "median_abnormal": float(a.median()),
                     "median_normal": float(b.median()), "U": float(res.statistic),
                     "p_value": float(res.pvalue)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# the radscore model with its probability link
# ---------------------------------------------------------------------------------------------
def fit_radscore(model, X: pd.DataFrame, y, *, cv: int, rng: int, test_scores: str = "auto",
                 tol: float = 1.25):
    """The radscore with its probability link, as the paper's "radiomic model established based
    on the radscores": :func:`vcfnb.models.fit_linked_radscore`.

    ``model`` (a :class:`vcfnb.models.RadscoreModel`) is refitted in ``cv`` folds seeded by
    ``rng``; a :class:`vcfnb.models.ProbabilityLink` is fitted on the out-of-fold radscores. New
    (test, external) patients are scored by the full-training chain when its radscore scale
    agrees with the fold models' on the training rows (label-free check,
    :func:`vcfnb.models.choose_test_scores` with ``tol``), else by the mean of the fold models;
    ``test_scores`` ("auto", "full", "fold_mean") says which. Returns the
    :class:`vcfnb.models.LinkedRadscore` (``model`` scores new patients, ``full``, ``oof``:
    ``y_true, score, fold, probability`` per training row, ``scale``).
    """
    from vcfnb.models import fit_linked_radscore

    return fit_linked_radscore(model, X, y, cv=cv, rng=rng, test_scores=test_scores, tol=tol)


def scale_sentence(fits: Mapping) -> str:
    """One sentence per run: which chain scored the new patients of each model, and why."""
    parts = []
    for name, f in fits.items():
        s = f.scale.iloc[0]
        chain = "the full-training model" if s.test_scores == "full" else "the mean of the fold models"
        parts.append(f"{name}: **{chain}**"
                     f" (SD ratio full/folds {s.sd_ratio:.2f}, shift {s['shift']:+.2f} SD: scales "
                     f"{'agree' if s.scales_agree else 'differ'} at tol {s.tol:g}"
                     f"{'' if s.policy == 'auto' else f'; forced by test_scores={s.policy}'})")
    return ("Validation and external patients are scored by " + "; ".join(parts) + ". The "
            "probability link is fitted on out-of-fold radscores, so it expects new patients' "
            "radscores on the fold models' scale.")


def linked_test_auc(X_test: pd.DataFrame, y_test, *, cv: int, rng: int, test_scores: str = "auto",
                    tol: float = 1.25):
    """The ``evaluate`` callable of :mod:`vcfnb.models`' whole-pipeline null test for
    :func:`fit_radscore`: refit radscore, link and the scale check on the labels given, AUC of
    the probabilities of the chain that scores new patients on the untouched test rows (the AUC
    the report states for the model)."""
    from sklearn.metrics import roc_auc_score

    def evaluate(model, X, y) -> float:
        fit = fit_radscore(model, X, y, cv=cv, rng=rng, test_scores=test_scores, tol=tol)
        return float(roc_auc_score(np.asarray(y_test), fit.model.predict_proba(X_test)[:, 1]))

    return evaluate


# ---------------------------------------------------------------------------------------------
# the external centre
# ---------------------------------------------------------------------------------------------
def harmonisation_batches(X: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """``X`` with a ``batch`` column for :class:`vcfnb.harmonize.ComBat`: the ``center`` column,
    or internal/external from ``split`` when the cohort names no centre."""
    c = cases.set_index("patient_id").loc[X.index]
    if "center" in c and c["center"].notna().all():
        batch = c["center"].astype(str)
    else:
        batch = c["split"].eq("external").map({True: "external", False: "internal"})
    return X.assign(batch=batch.to_numpy())


def harmonisation_shift(X: pd.DataFrame, X_harmonised: pd.DataFrame, cases: pd.DataFrame
                        ) -> pd.DataFrame:
    """How far the external features sit from the training distribution before and after
    harmonisation: median |standardised mean difference| and |log SD ratio| over features."""
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
                     "median_abs_smd": float(np.nanmedian(smd)),
                     "median_abs_log_sd_ratio": float(np.nanmedian(ratio)),
                     "features_smd_gt_0.5": int(np.sum(smd > 0.5))})
    return pd.DataFrame(rows)
