"""Study rules of ``ovf_prediction_ct`` (seed 003): compartments, vBMD read-out, the five models.

Seed 003 predicts an incident thoracolumbar osteoporotic vertebral fracture from baseline CT:
each of T11, T12, L1 and L2 is split into a cortical-shell VOI and a cancellous VOI, radiomics
features per VOI are reduced per compartment (max-abs scaling → mRMR → LASSO with CV) to a
radscore formula, the patient's radscore is the mean over the vertebrae, and logistic models on
the radscores are compared with volumetric BMD (vBMD).

What lives here (the study's own rules; generic steps are :mod:`vcfnb.preprocess`,
:mod:`vcfnb.features`, :mod:`vcfnb.models`, :mod:`vcfnb.stats`, called from the notebook):

- :data:`REQUIREMENTS` -- what a cohort must hold (:mod:`vcfnb.contract`);
- :func:`compartment_rois` -- cortical/cancellous VOIs from whole-vertebra masks (erosion by a
  shell thickness in mm, :func:`vcfnb.preprocess.split_cortical_cancellous`; derived masks are
  written by :func:`vcfnb.io.write_image` under the run's cache, never into the cohort), or the
  cohort's own compartment masks used as given;
- :func:`density_readout` / :func:`patient_vbmd` -- vBMD through a linear HU → BMD calibration;
- :func:`patient_table` -- per-patient compartment features = mean over the vertebrae;
- :func:`ovf_models` -- the five logistic models of the paper as pipelines (the compartment
  radscores are :class:`vcfnb.models.RadscoreModel`, fitted inside each pipeline);
- :func:`match_controls`, :func:`split_patients` -- the 1:2 propensity matching (before the
  split, as the paper) and the 7:3 split, or the cohort's own ``split`` column when given.

References
----------
Che M, Chen Y, et al. Deep learning-assisted radiomics for predicting thoracolumbar osteoporotic
vertebral fractures. Clin Interv Aging (seed 003).
Peng H, Long F, Ding C. mRMR. IEEE TPAMI 2005. Tibshirani R. The lasso. JRSS-B 1996.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from vcfnb import contract, io, parallel, preprocess
from vcfnb.models import RadscoreModel
from vcfnb.features import file_digest

__all__ = [
    "LEVELS", "COMPARTMENTS", "MODEL_INPUTS", "REQUIREMENTS", "EFFICIENCY_TABLES", "parse_roi",
    "compartment_rois", "compartment_summary", "density_readout", "patient_vbmd",
    "patient_features", "patient_table", "ovf_models", "fitted_radscores", "selected_features",
    "vertebra_scores", "match_controls", "split_patients", "resolve_cohort",
]

#: the thoracolumbar levels of seed 003, cranial to caudal
LEVELS = ("T11", "T12", "L1", "L2")
COMPARTMENTS = ("cortical", "cancellous")
#: model name → the per-patient inputs its logistic regression uses
MODEL_INPUTS = {
    "cortical": ["radscore_cortical"],
    "cancellous": ["radscore_cancellous"],
    "vertebral": ["radscore_cortical", "radscore_cancellous"],
    "vBMD": ["vbmd"],
    "combined": ["radscore_cortical", "radscore_cancellous", "vbmd"],
}
#: (table name, models, splits) of seed 003's tables 2-5
EFFICIENCY_TABLES = (
    ("table2_radscore_models_train", ["vertebral", "cancellous", "cortical"], ["train", "train_oof"]),
    ("table3_radscore_models_test", ["vertebral", "cancellous", "cortical"], ["test", "external"]),
    ("table4_vbmd_models_train", ["combined", "vertebral", "vBMD"], ["train", "train_oof"]),
    ("table5_vbmd_models_test", ["combined", "vertebral", "vBMD"], ["test", "external"]),
)

REQUIREMENTS = contract.Requirements(
    study="ovf_prediction_ct",
    design="holdout",
    sequences=("CT",),
    readers={"1": "every step (the `reader` parameter picks whose masks are used)"},
    columns=(
        contract.Column("{outcome}", "binary", needed_for="propensity matching and the models",
                        outcome=True),
        contract.Column("age", "numeric", needed_for="propensity matching (`match_covariates`)",
                        when="require_outcome"),
        contract.Column("sex", "any", needed_for="propensity matching (`match_covariates`)",
                        when="require_outcome"),
    ),
    folds=(contract.Folds("oof_folds", on="train"),
           contract.Folds("lasso_cv", on="train", within=("oof_folds",))),
    test_size_param="test_size",
    main_models=("combined",),
    notes=("ROIs are named by level (`T11`, `T12`, `L1`, `L2`: the `levels` parameter) for "
           "whole-vertebra masks, split here by erosion of `shell_mm`; or "
           "`<level>_cortical` / `<level>_cancellous` for compartment masks used as given.",
           "Optional columns: `bmi` and `vbmd` (QCT, mg/cm³) enter table 1; `vbmd` is also "
           "compared with the image-derived vBMD. A `split` column (train/test/external) is "
           "honoured after the propensity matching."),
)


def parse_roi(roi: str) -> tuple[str, str | None]:
    """``"T12_cortical"`` → ``("T12", "cortical")``; ``"L1"`` → ``("L1", None)``.

    Examples
    --------
    >>> parse_roi("L2_cancellous"), parse_roi("T11")
    (('L2', 'cancellous'), ('T11', None))
    """
    parts = str(roi).rsplit("_", 1)
    if len(parts) == 2 and parts[1].lower() in COMPARTMENTS:
        return parts[0], parts[1].lower()
    return str(roi), None


def split_mask(mask: sitk.Image, labels: Sequence[int], shell_mm: float, *,
               slice_axis: int | None = None) -> tuple[sitk.Image, list[tuple[int, int]]]:
    """Split every labelled vertebra of one mask: a compartment label map (no file I/O).

    Vertebra ``i`` of ``labels`` becomes label ``2i + 1`` (cortical shell) and ``2i + 2``
    (cancellous); returns the label map and the voxel counts ``[(n cortical, n cancellous)]``.
    """
    arr = sitk.GetArrayFromImage(mask)
    out = np.zeros(arr.shape, np.uint8)
    counts = []
    for i, label in enumerate(labels):
        region = arr == int(label)
        if not region.any():
            raise ValueError(f"label {label} is absent from the mask")
        # split inside the label's bounding box + 1 voxel (identical result, much faster)
        sl = preprocess.bbox_slices(region, margin=1)
        sub = sitk.GetImageFromArray(region[sl].astype(np.uint8))
        sub.SetSpacing(mask.GetSpacing())
        sub.SetDirection(mask.GetDirection())
        sub.SetOrigin(mask.TransformIndexToPhysicalPoint([int(s.start) for s in sl[::-1]]))
        cort, canc = preprocess.split_cortical_cancellous(sub, shell_mm, label=1,
                                                          slice_axis=slice_axis)
        c = sitk.GetArrayViewFromImage(cort) != 0
        k = sitk.GetArrayViewFromImage(canc) != 0
        out[sl][c], out[sl][k] = 2 * i + 1, 2 * i + 2
        counts.append((int(c.sum()), int(k.sum())))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(mask)
    return img, counts


def _split_job(args):
    (mask_path, labels, target), shell_mm, slice_axis = args
    if Path(target).is_file():  # reuse: labels follow the row order, voxels counted
        arr = sitk.GetArrayFromImage(io.read_image(target))
        return [(int((arr == 2 * i + 1).sum()), int((arr == 2 * i + 2).sum()))
                for i in range(len(labels))]
    img, counts = split_mask(io.read_image(mask_path), labels, shell_mm, slice_axis=slice_axis)
    io.write_image(img, target)
    return counts


def compartment_rois(rois: pd.DataFrame, out_dir: str | os.PathLike, *, shell_mm: float = 2.0,
                     levels: Sequence[str] = LEVELS, slice_axis: int | None = None,
                     n_jobs: int = 1) -> pd.DataFrame:
    """Cortical-shell and cancellous VOIs for every vertebra of a cohort's ``rois`` table.

    Rows whose ``roi`` already names a compartment (``"T12_cortical"``) are used as given.
    Rows with a whole-vertebra mask (``roi`` = a level) are split by :func:`split_mask`: a voxel
    is cortical when its centre lies less than ``shell_mm`` below the mask surface -- vcfnb's
    replacement for the paper's 3D U-Net. All vertebrae of one mask file go into one derived
    label map written under ``out_dir`` (the run's cache; never the cohort folder), named by the
    source mask's content digest and ``shell_mm`` so a re-run reuses it.

    Returns
    -------
    DataFrame
        One row per VOI: the columns of ``rois`` (``roi`` = ``<level>_<compartment>``, derived
        ``mask``/``label``), plus ``level``, ``compartment``, ``derived`` and ``n_voxels``
        (NaN for given rows).
    """
    if shell_mm <= 0:
        raise ValueError(f"shell_mm must be > 0, got {shell_mm}")
    parsed = [parse_roi(r) for r in rois["roi"]]
    lv = pd.Series([p[0] for p in parsed], index=rois.index)
    comp = pd.Series([p[1] for p in parsed], index=rois.index)
    keep = lv.isin(list(levels))
    sel = keep & comp.notna()
    given = rois.loc[sel].assign(level=lv[sel], compartment=comp[sel], derived=False,
                                 n_voxels=np.nan)
    whole = rois.loc[keep & comp.isna()]
    jobs, groups, derived_rows = [], [], []
    for mask_path, grp in whole.groupby("mask", sort=False):
        labels = [int(x) for x in grp["label"]]
        key = hashlib.sha256(f"{file_digest(mask_path)}|{shell_mm:.6g}|{slice_axis}|"
                             f"{list(zip(grp['roi'], labels))}".encode()).hexdigest()[:20]
        target = str(Path(out_dir) / f"{grp.patient_id.iat[0]}_compartments_{key}.nii.gz")
        jobs.append((mask_path, labels, target))
        groups.append(grp)
    # each split takes milliseconds: worker start-up only pays off for many masks
    results = parallel.pmap(_split_job, [(j, shell_mm, slice_axis) for j in jobs],
                            n_jobs=(n_jobs or 1) if len(jobs) >= 200 else 1)
    for (_, _, target), grp, counts in zip(jobs, groups, results):
        for i, ((_, src), (nc, nk)) in enumerate(zip(grp.iterrows(), counts)):
            for compartment, lab, n in (("cortical", 2 * i + 1, nc), ("cancellous", 2 * i + 2, nk)):
                derived_rows.append({**src.to_dict(), "roi": f"{src.roi}_{compartment}",
                                     "mask": target, "label": lab, "level": src.roi,
                                     "compartment": compartment, "derived": True, "n_voxels": n})
    out = pd.concat([given, pd.DataFrame(derived_rows)], ignore_index=True)
    if out.empty:
        raise ValueError(f"no ROI of levels {list(levels)} in the rois table "
                         f"(roi values: {sorted(rois['roi'].unique())[:10]})")
    order = {v: i for i, v in enumerate(levels)}
    out["_o"] = out["level"].map(order) * 2 + (out["compartment"] == "cancellous")
    out = out.sort_values(["patient_id", "_o"], kind="stable").drop(columns="_o")
    return out.reset_index(drop=True)


def compartment_summary(voi: pd.DataFrame) -> pd.DataFrame:
    """VOI counts and voxel counts by level and compartment (a table for the report)."""
    g = voi.groupby(["level", "compartment"], sort=False)
    return g.agg(vois=("patient_id", "size"), patients=("patient_id", "nunique"),
                 derived=("derived", "sum"), median_voxels=("n_voxels", "median")).reset_index()


def density_readout(voi: pd.DataFrame, *, slope: float, intercept: float,
                    compartment: str = "cancellous") -> pd.DataFrame:
    """Mean CT number and calibrated density of each VOI of one compartment.

    ``vBMD [mg/cm³] = slope × mean HU + intercept`` -- a linear calibration as in phantom or
    phantomless QCT (seed 003: Mindways phantom, 100 mm² ROI; here the whole cancellous VOI).

    Returns
    -------
    DataFrame
        ``patient_id, level, roi, n_voxels, mean_hu, sd_hu, vbmd``.
    """
    rows = []
    for image_path, grp in voi[voi["compartment"] == compartment].groupby("image", sort=False):
        img = sitk.GetArrayFromImage(io.read_image(image_path)).astype(float)
        masks: dict[str, np.ndarray] = {}
        for _, r in grp.iterrows():
            if r["mask"] not in masks:
                masks[r["mask"]] = sitk.GetArrayFromImage(io.read_image(r["mask"]))
            m = masks[r["mask"]] == int(r["label"])
            if m.shape != img.shape:
                raise ValueError(f"{r['mask']}: mask shape {m.shape} differs from image {img.shape}")
            v = img[m]
            rows.append({"patient_id": r.patient_id, "level": r.level, "roi": r.roi,
                         "n_voxels": int(m.sum()), "mean_hu": float(v.mean()) if v.size else np.nan,
                         "sd_hu": float(v.std(ddof=1)) if v.size > 1 else np.nan})
    out = pd.DataFrame(rows, columns=["patient_id", "level", "roi", "n_voxels", "mean_hu", "sd_hu"])
    out["vbmd"] = slope * out["mean_hu"] + intercept
    return out


def patient_vbmd(readout: pd.DataFrame) -> pd.Series:
    """Per-patient vBMD = mean over the patient's levels, named ``vbmd``."""
    return readout.groupby("patient_id", sort=False)["vbmd"].mean().rename("vbmd")


def patient_features(features: pd.DataFrame, voi: pd.DataFrame) -> pd.DataFrame:
    """Per-patient compartment features = mean over the vertebrae, columns
    ``<compartment>__<feature>`` (index ``patient_id``).

    ``features`` is :func:`vcfnb.features.extract` of ``voi`` (same row order). A radscore is
    linear in the (max-abs scaled) features, so the radscore of these means equals the mean of
    the vertebrae's radscores -- the paper's patient score.
    """
    cols = [c for c in features.columns if c not in ("patient_id", "roi", "sequence", "reader")
            and pd.api.types.is_numeric_dtype(features[c])]
    df = features[cols].assign(patient_id=voi["patient_id"].to_numpy(),
                               compartment=voi["compartment"].to_numpy())
    parts = []
    for comp in COMPARTMENTS:
        m = df[df.compartment == comp].drop(columns="compartment")
        if len(m):
            m = m.groupby("patient_id", sort=False).mean()
            parts.append(m.add_prefix(f"{comp}__"))
    return pd.concat(parts, axis=1)


def patient_table(features: pd.DataFrame, voi: pd.DataFrame, density: pd.DataFrame,
                  cases: pd.DataFrame, split: pd.Series, *, outcome: str = "outcome"
                  ) -> pd.DataFrame:
    """One row per patient: compartment features, ``vbmd`` (from the images), ``outcome`` and
    ``split``; index ``patient_id``."""
    t = patient_features(features, voi)
    t["vbmd"] = patient_vbmd(density).reindex(t.index)
    c = cases.set_index(cases.patient_id.astype(str))
    t["outcome"] = c[outcome].reindex(t.index).astype(int)
    t["split"] = split.reindex(t.index)
    return t


def ovf_models(*, k: int = 30, cv: int = 10, rule: str = "min", lam: dict | None = None,
               random_state: int | None = None, memory=None) -> dict[str, Pipeline]:
    """The five logistic models of seed 003 as unfitted pipelines on per-patient tables.

    Each pipeline computes both compartment radscores (fitted on the rows given to ``fit``
    only) and ``vbmd``, keeps the inputs of its model (:data:`MODEL_INPUTS`) and ends in an
    unpenalised logistic regression, so refitting a pipeline (CV folds, permutation test)
    refits the whole chain. The radscore step is the same in all five pipelines: with
    ``memory`` (a folder or :class:`joblib.Memory`, scikit-learn's pipeline cache) it is fitted
    once per training set and shared, as the paper's five models share one pair of radscores;
    a folder is keyed by the code of :mod:`vcfnb.models`, :mod:`vcfnb.selection` and the
    scikit-learn version, so a changed radscore chain is never served from a stale cache.
    ``lam``: fixed LASSO lambda per compartment (paper: 0.037 cortical, 0.032 cancellous).
    """
    lam = lam or {}
    if isinstance(memory, (str, os.PathLike)):  # a cache folder: key it by the radscore code
        import sklearn

        from vcfnb import models, selection
        code = "|".join([sklearn.__version__, *(file_digest(m.__file__) for m in (models, selection))])
        memory = str(Path(memory) / hashlib.sha256(code.encode()).hexdigest()[:16])
    inputs = ColumnTransformer(
        [(c, RadscoreModel(scaler="maxabs", k=k, prefix=f"{c}__", lam=lam.get(c), cv=cv,
                           rule=rule, n_lambdas=40, lambda_min_ratio=0.01, tol=1e-3,
                           max_iter=2000, random_state=random_state, name=f"radscore_{c}"),
          slice(None)) for c in COMPARTMENTS]
        + [("vbmd", "passthrough", ["vbmd"])], verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    return {name: Pipeline([("inputs", clone(inputs)),
                            ("keep", ColumnTransformer([("keep", "passthrough", cols)])),
                            ("logistic", LogisticRegression(C=np.inf, max_iter=5000))],
                           memory=memory)
            for name, cols in MODEL_INPUTS.items()}


def fitted_radscores(model: Pipeline) -> dict[str, RadscoreModel]:
    """The fitted compartment radscores inside a fitted :func:`ovf_models` pipeline."""
    ct = model.named_steps["inputs"]
    return {c: ct.named_transformers_[c] for c in COMPARTMENTS if c in ct.named_transformers_}


def selected_features(radscores: dict[str, RadscoreModel]) -> pd.DataFrame:
    """The LASSO-selected features per compartment with coefficients and the chosen lambda."""
    return pd.DataFrame([{"compartment": name, "feature": f, "coef": c,
                          "lambda": rs.lasso_.lambda_, "n_candidates": len(rs.columns_)}
                         for name, rs in radscores.items() for f, c in rs.coef_.items()])


def vertebra_scores(radscores: dict[str, RadscoreModel], features: pd.DataFrame,
                    voi: pd.DataFrame) -> pd.DataFrame:
    """Each vertebra's cortical and cancellous radscore (one row per patient and level; their
    mean per patient is the patient radscore, by linearity)."""
    parts = []
    for comp, rs in radscores.items():
        sel = (voi["compartment"] == comp).to_numpy()
        idx = pd.MultiIndex.from_arrays([voi.loc[sel, "patient_id"], voi.loc[sel, "level"]])
        score = rs.radscore(features.loc[sel].add_prefix(f"{comp}__"))
        parts.append(pd.Series(score, index=idx, name=f"radscore_{comp}"))
    return pd.concat(parts, axis=1).reset_index()


def has_outcome(cases: pd.DataFrame, outcome: str = "outcome") -> bool:
    """True when ``cases`` carries a usable 0/1 outcome with both classes."""
    return outcome in cases and cases[outcome].notna().all() and cases[outcome].nunique() == 2


def match_controls(cases: pd.DataFrame, *, outcome: str = "outcome",
                   covariates: Sequence[str] = ("age", "sex"), ratio: int = 2,
                   caliper: float | None = 0.2, rng=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Propensity-score matching of fracture patients to controls (seed 003: 1:2, age, sex).

    Nearest neighbour on the logit of the propensity score, without replacement, caliper in SDs
    of the logit (:func:`vcfnb.stats.propensity_match`). Patients of a given ``external`` split
    are an independent cohort: they are not matched and are kept as they are. Without an
    outcome every case is kept and the balance table is empty.

    Returns
    -------
    (DataFrame, DataFrame)
        The matched cases and the balance table (SMD before/after, counts).
    """
    from vcfnb import stats

    if not has_outcome(cases, outcome):
        return cases.copy(), pd.DataFrame(columns=["covariate", "smd_before", "smd_after"])
    ext = cases["split"].eq("external") if "split" in cases else pd.Series(False, cases.index)
    internal = cases[~ext]
    matched = stats.propensity_match(internal, outcome, list(covariates), ratio=ratio,
                                     caliper=caliper, rng=rng)
    balance = stats.balance_table(internal, outcome, list(covariates), matched=matched)
    for when, d in (("before", internal), ("after", matched)):
        balance[f"n_treated_{when}"] = int((d[outcome] == 1).sum())
        balance[f"n_control_{when}"] = int((d[outcome] == 0).sum())
    return pd.concat([matched, cases[ext]], ignore_index=True), balance


def split_patients(cases: pd.DataFrame, *, outcome: str = "outcome", test_size: float = 0.3,
                   random_state: int | None = None) -> pd.Series:
    """The patient split → Series ``split`` indexed by ``patient_id``.

    A ``split`` column in ``cases`` (train/test/external, docs/cohorts.md) is the split used,
    unchanged (``attrs["source"] = "given"``); otherwise a stratified split with ``test_size``
    (seed 003: 7:3). One row per patient, so no patient's vertebrae straddle train and test.
    Without an outcome every patient is ``"unlabelled"``.
    """
    from sklearn.model_selection import train_test_split

    ids = pd.Index(cases["patient_id"].astype(str).to_numpy(), name="patient_id")
    if not has_outcome(cases, outcome):
        s = pd.Series("unlabelled", index=ids, name="split")
        s.attrs["source"] = "none"
        return s
    given = cases["split"].fillna("").astype(str) if "split" in cases else None
    if given is not None and (given != "").any():
        if (given == "").any() or not {"train", "test"} <= set(given):
            missing = list(ids[(given == "").to_numpy()][:5])
            raise ValueError("cases.csv has a split column but it is empty for "
                             f"{int((given == '').sum())} patient(s) {missing} or lacks train or "
                             "test rows: fill it for every patient or remove the column")
        s = pd.Series(given.to_numpy(), index=ids, name="split")
        s.attrs["source"] = "given"
        return s
    tr, te = train_test_split(ids.to_numpy(), test_size=test_size,
                              stratify=cases[outcome].to_numpy(), random_state=random_state)
    s = pd.Series("train", index=ids, name="split")
    s[list(te)] = "test"
    s.attrs["source"] = f"stratified {1 - test_size:.0%}/{test_size:.0%} split"
    return s


def split_counts(split: pd.Series, cases: pd.DataFrame, *, outcome: str = "outcome") -> pd.DataFrame:
    """Patients per split (and outcome, when there is one)."""
    d = pd.DataFrame({"split": split})
    if outcome in cases:
        d[outcome] = cases.set_index(cases.patient_id.astype(str))[outcome].reindex(split.index)
    return d.groupby(list(d.columns)).size().rename("patients").reset_index()


def select_rois(rois: pd.DataFrame, cases: pd.DataFrame, *, reader: str = "1") -> pd.DataFrame:
    """ROI rows of the (matched) patients and one reader."""
    keep = rois["patient_id"].isin(set(cases["patient_id"].astype(str)))
    return rois[keep & (rois["reader"].astype(str) == str(reader))].reset_index(drop=True)


def vbmd_agreement(density: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Per-patient image-derived vBMD beside the cohort's own ``vbmd`` column (when present)."""
    v = patient_vbmd(density).reset_index().rename(columns={"vbmd": "vbmd_image"})
    if "vbmd" not in cases:
        return v
    v = v.merge(cases[["patient_id", "vbmd"]].rename(columns={"vbmd": "vbmd_cohort"}),
                on="patient_id", how="left")
    d = v.vbmd_image - v.vbmd_cohort
    r = float(np.corrcoef(v.vbmd_image, v.vbmd_cohort)[0, 1]) if len(v) > 2 else np.nan
    return pd.DataFrame([{"patients": len(v), "mean_image": v.vbmd_image.mean(),
                          "mean_cohort": v.vbmd_cohort.mean(), "mean_difference": d.mean(),
                          "sd_difference": d.std(ddof=1), "pearson_r": r}])


def resolve_cohort(run):
    """The run's cohort: as resolved by :func:`vcfnb.report.start_run`, or -- with the
    ``real_ct`` parameter -- the real-CT cohort (no outcome) built from ``shared_data`` under
    the run's cache folder (``<cache_dir>/cohorts/ovf-real-ct``), never into ``cohort_dir``."""
    p = run.params
    if not p.get("real_ct"):
        return run.cohort
    if p.get("cohort_dir"):
        raise ValueError("real_ct builds its own cohort from shared_data (under cache_dir); "
                         f"leave cohort_dir empty (got {p['cohort_dir']!r}): vcfnb never writes "
                         "into a cohort folder")
    from vcfnb import sources

    shared = Path(p.get("shared_data") or "../shared/data")
    shared = shared if shared.is_absolute() else (run.root / shared).resolve()
    folder = sources.real_ct_cohort(shared, run.cache_dir / "cohorts" / "ovf-real-ct",
                                    root=run.root)
    run.cohort = io.load_cohort(folder, require_outcome=False)
    run.simulated = False
    run.note("real CT vertebrae (TPTBox sample CT, TotalSegmentator example CT): no outcome labels")
    return run.cohort


def require_outcome(run, cases: pd.DataFrame, outcome: str = "outcome") -> None:
    """Stop the run cleanly (:meth:`vcfnb.report.Run.stop`) when there are no outcome labels."""
    if not has_outcome(cases, outcome):
        run.stop("no outcome labels in this cohort (real scans without incident-fracture "
                 "follow-up): compartments, features and vBMD are computed above; the radscore "
                 "and logistic models need a 0/1 outcome per patient")
