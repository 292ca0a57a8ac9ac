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
- :func:`feature_recipe` -- the per-patient table (one column block per VOI);
  :func:`block_vbmd` / :func:`vbmd_table` -- vBMD through a linear HU → BMD calibration of the
  cancellous VOIs' mean CT number, one source for table 1 and the models;
- :class:`OVFModel` -- the paper's logistic models: per-vertebra radscores per compartment,
  averaged per patient, and a logistic link fitted on out-of-fold radscores;
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
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression

from vcfnb import contract, io, parallel, preprocess
from vcfnb.models import RadscoreModel
from vcfnb.features import file_digest

__all__ = [
    "LEVELS", "COMPARTMENTS", "MODEL_INPUTS", "REQUIREMENTS", "EFFICIENCY_TABLES", "parse_roi",
    "compartment_rois", "compartment_summary", "feature_recipe", "vertebra_rows", "block_vbmd",
    "vbmd_table", "OVFModel", "refit_test_auc", "selected_features", "radscore_formula",
    "vertebra_scores", "match_controls", "split_patients", "resolve_cohort",
]

#: the thoracolumbar levels of seed 003, cranial to caudal
LEVELS = ("T11", "T12", "L1", "L2")
COMPARTMENTS = ("cortical", "cancellous")
#: model name → the per-patient inputs its logistic regression uses
MODEL_INPUTS = {
    "cortical": ("radscore_cortical",),
    "cancellous": ("radscore_cancellous",),
    "vertebral": ("radscore_cortical", "radscore_cancellous"),
    "vBMD": ("vbmd",),
    "combined": ("radscore_cortical", "radscore_cancellous", "vbmd"),
}
#: (table name, models, splits) of seed 003's tables 2-5
EFFICIENCY_TABLES = (
    ("table2_radscore_models_train", ["vertebral", "cancellous", "cortical"], ["train", "train_oof"]),
    ("table3_radscore_models_test", ["vertebral", "cancellous", "cortical"], ["test", "external"]),
    ("table4_vbmd_models_train", ["combined", "vertebral", "vBMD"], ["train", "train_oof"]),
    ("table5_vbmd_models_test", ["combined", "vertebral", "vBMD"], ["test", "external"]),
)

REQUIREMENTS = contract.Requirements(
    study="ovf_prediction_ct", design="holdout", sequences=("CT",),
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


def _split_job(args):
    (mask_path, labels, target), shell_mm, slice_axis = args
    if Path(target).is_file():  # reuse: labels follow the row order, voxels counted
        arr = sitk.GetArrayFromImage(io.read_image(target))
        return [(int((arr == 2 * i + 1).sum()), int((arr == 2 * i + 2).sum()))
                for i in range(len(labels))]
    img, counts = preprocess.split_vertebrae(io.read_image(mask_path), labels, shell_mm,
                                             slice_axis=slice_axis)
    io.write_image(img, target)
    return counts


def compartment_rois(rois: pd.DataFrame, out_dir: str | os.PathLike, *, shell_mm: float = 2.0,
                     levels: Sequence[str] = LEVELS, slice_axis: int | None = None,
                     n_jobs: int = 1) -> pd.DataFrame:
    """Cortical-shell and cancellous VOIs for every vertebra of a cohort's ``rois`` table.

    Rows whose ``roi`` already names a compartment (``"T12_cortical"``) are used as given.
    Rows with a whole-vertebra mask (``roi`` = a level) are split by
    :func:`vcfnb.preprocess.split_vertebrae`: a voxel
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
    return voi.groupby(["level", "compartment"], sort=False).agg(
        vois=("patient_id", "size"), patients=("patient_id", "nunique"),
        derived=("derived", "sum"), median_voxels=("n_voxels", "median")).reset_index()


#: the feature that is each VOI's mean CT number (pyradiomics first-order Mean, Original image)
MEAN_HU_FEATURE = "original_firstorder_Mean"


def feature_recipe(levels: Sequence[str], *, sequence: str = "CT", reader: str = "1",
                   mask_grid: str = "strict") -> dict:
    """The per-patient table of the models (:func:`vcfnb.features.patient_table`): one column
    block per VOI, ``<sequence>_<level>_<compartment>_<feature>``; also saved with the models."""
    return {"sequences": [str(sequence)], "reader": str(reader), "aggregate": "block",
            "rois": [f"{lv}_{c}" for lv in levels for c in COMPARTMENTS],
            "prefix": {str(sequence): str(sequence)}, "mask_grid": mask_grid,
            "description": "seed 003: cortical and cancellous VOIs of each level, one block each"}


def vertebra_rows(X: pd.DataFrame, levels: Sequence[str] = LEVELS, prefix: str = "CT",
                  compartments: Sequence[str] = COMPARTMENTS) -> pd.DataFrame:
    """Patient block table → one row per vertebra (index ``patient_id, level``), columns
    ``<compartment>__<feature>``: the rows the per-vertebra radscores are fitted on."""
    parts = []
    for lv in levels:
        block = []
        for comp in compartments:
            head = f"{prefix}_{lv}_{comp}_"
            cols = [c for c in X.columns if str(c).startswith(head)]
            if not cols:
                raise ValueError(f"the patient table has no column {head}* (levels "
                                 f"{list(levels)}, prefix {prefix!r})")
            block.append(X[cols].set_axis([f"{comp}__{c[len(head):]}" for c in cols], axis=1))
        parts.append(pd.concat(block, axis=1).set_index(pd.Index([lv] * len(X), name="level"),
                                                          append=True))
    rows = pd.concat(parts)
    rows.index.names = ["patient_id", "level"]
    return rows


def block_vbmd(X: pd.DataFrame, levels: Sequence[str] = LEVELS, prefix: str = "CT", *,
               slope: float, intercept: float) -> pd.Series:
    """Per-patient vBMD [mg/cm³] = ``slope`` × mean over the levels of the cancellous VOI's
    mean CT number (:data:`MEAN_HU_FEATURE`) + ``intercept``."""
    cols = [f"{prefix}_{lv}_cancellous_{MEAN_HU_FEATURE}" for lv in levels]
    missing = [c for c in cols if c not in X.columns]
    if missing:
        raise ValueError(f"vBMD needs {missing[0]}: extract the first-order class of the "
                         "Original image (featureClass firstorder, imageType Original)")
    return (slope * X[cols].mean(axis=1) + intercept).rename("vbmd")


def vbmd_table(features: pd.DataFrame, voi: pd.DataFrame, *, slope: float, intercept: float
               ) -> pd.DataFrame:
    """vBMD of every cancellous VOI from its extracted mean CT number (the same numbers the
    models and table 1 use): ``patient_id, level, roi, mean_hu, vbmd``."""
    if MEAN_HU_FEATURE not in features:
        raise ValueError(f"vBMD needs the feature {MEAN_HU_FEATURE} (featureClass firstorder, "
                         "imageType Original)")
    sel = (voi["compartment"] == "cancellous").to_numpy()
    out = voi.loc[sel, ["patient_id", "level", "roi"]].assign(
        mean_hu=features.loc[sel, MEAN_HU_FEATURE].to_numpy(float))
    return out.assign(vbmd=slope * out["mean_hu"] + intercept).reset_index(drop=True)


class OVFModel(ClassifierMixin, BaseEstimator):
    """One of seed 003's logistic models, with radscores fitted per vertebra and the logistic
    link fitted on out-of-fold radscores.

    Input: the patient block table (:func:`feature_recipe`). ``fit`` chooses each
    compartment's LASSO lambda by ``lasso_cv``-fold, patient-grouped CV on the vertebra rows
    (:func:`vertebra_rows`) of all training patients (``lambda_fits_``: max-abs → mRMR ``k`` →
    LASSO, :class:`vcfnb.models.RadscoreModel`), then splits the training patients into
    ``oof_folds`` stratified folds; in each fold the radscores (scaling, mRMR and LASSO
    coefficients at that lambda) are refitted on the other folds' vertebrae and score the
    held-out patients' vertebrae; a patient's radscore is the mean of its vertebrae's. Only
    the lambda (one number per compartment) has seen the held-out patients' labels: a nested
    lambda CV in every fold would cost ``oof_folds`` times more, for each permutation. The logistic regression on
    ``inputs`` (radscores and/or ``vbmd``, :func:`block_vbmd`) is fitted on these out-of-fold
    radscores (``oof_``), never on radscores of the rows that fitted them. New patients are
    scored with the **mean of the fold radscore models** (one linear formula, the scale the
    link was fitted on), then the link.

    ``solver``: the LASSO's, ``"cd"`` (default; :mod:`vcfnb.lasso_cd`, glmnet's coordinate
    descent, stopped at glmnet's own criterion ``thresh``, default 1e-7 as R's glmnet: the
    paper used R) or ``"liblinear"`` (at ``tol=1e-3``, the study's earlier choice, which stops
    short of the LASSO optimum and keeps near-duplicate features; ``thresh`` does not apply).
    On the paper-sized simulated cohort ``cd`` refits 2.4-4x faster (the permutation test) and
    selects fewer, less redundant features.
    """

    def __init__(self, inputs: Sequence[str] = MODEL_INPUTS["combined"],
                 levels: Sequence[str] = LEVELS, prefix: str = "CT", k: int = 30,
                 lasso_cv: int = 10, rule: str = "min", lam: dict | None = None,
                 oof_folds: int = 5, bmd_slope: float = 0.8, bmd_intercept: float = 4.0,
                 random_state: int = 0, n_jobs: int = 1, solver: str = "cd",
                 thresh: float | None = 1e-7) -> None:
        self.inputs, self.levels, self.prefix, self.k = inputs, levels, prefix, k
        self.lasso_cv, self.rule, self.lam, self.oof_folds = lasso_cv, rule, lam, oof_folds
        self.bmd_slope, self.bmd_intercept, self.thresh = bmd_slope, bmd_intercept, thresh
        self.random_state, self.n_jobs, self.solver = random_state, n_jobs, solver

    def _comps(self) -> list[str]:  # an unknown input fails in the link's column selection
        return [c for c in COMPARTMENTS if f"radscore_{c}" in self.inputs]

    def prepare(self, X: pd.DataFrame) -> dict:
        """The label-free part (vertebra rows, vBMD): computed once, reused by every refit."""
        X = pd.DataFrame(X)
        v = block_vbmd(X, self.levels, self.prefix, slope=self.bmd_slope,
                       intercept=self.bmd_intercept)
        rows = vertebra_rows(X, self.levels, self.prefix, self._comps()) if self._comps() else None
        return {"index": X.index, "vbmd": v, "rows": rows}

    def _radscore(self, comp: str, lam: float | None = None) -> RadscoreModel:
        return RadscoreModel(scaler="maxabs", k=self.k, prefix=f"{comp}__",
                             lam=lam if lam is not None else (self.lam or {}).get(comp),
                             cv=self.lasso_cv, rule=self.rule, compute_path=lam is None,
                             n_lambdas=40, lambda_min_ratio=0.01, max_iter=2000,
                             solver=self.solver, random_state=self.random_state,
                             **({"thresh": self.thresh} if self.solver == "cd" else {"tol": 1e-3}),
                             name=f"radscore_{comp}")

    @staticmethod
    def _patient_scores(models: dict, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({f"radscore_{c}": m.radscore(rows) for c, m in models.items()},
                            index=rows.index).groupby(level=0, sort=False).mean()

    def fit(self, X: pd.DataFrame, y) -> OVFModel:
        return self.fit_prepared(self.prepare(X), y)

    def fit_prepared(self, prep: dict, y) -> OVFModel:
        """:meth:`fit` on the output of :meth:`prepare`."""
        from sklearn.model_selection import StratifiedKFold

        idx, y = prep["index"], np.asarray(y).ravel().astype(int)
        comps, self.classes_, self.folds_, fold = self._comps(), np.unique(y), [], np.full(len(y), -1)
        oof = pd.DataFrame(np.nan, index=idx, columns=[f"radscore_{c}" for c in comps])
        if comps:
            rows = prep["rows"]
            pid = rows.index.get_level_values("patient_id")
            y_row = pd.Series(y, index=idx).reindex(pid).to_numpy()
            splits = list(StratifiedKFold(int(self.oof_folds), shuffle=True,
                                          random_state=self.random_state).split(idx, y))

            self.lambda_fits_ = dict(zip(comps, parallel.pmap(
                lambda c: self._radscore(c).fit(rows, y_row, groups=pid), comps, n_jobs=self.n_jobs)))
            lam = {c: m.lasso_.lambda_ for c, m in self.lambda_fits_.items()}

            def one(split):
                m = pid.isin(idx[split[0]])
                return {c: self._radscore(c, lam[c]).fit(rows[m], y_row[m]) for c in comps}

            self.folds_ = parallel.pmap(one, splits, n_jobs=self.n_jobs)
            for j, ((_, te), models) in enumerate(zip(splits, self.folds_)):
                oof.iloc[te] = self._patient_scores(models, rows[pid.isin(idx[te])]).reindex(
                    idx[te]).to_numpy()
                fold[te] = j
        return self._fit_link(oof.assign(vbmd=prep["vbmd"].to_numpy()), y, fold)

    def _fit_link(self, oof: pd.DataFrame, y: np.ndarray, fold: np.ndarray) -> OVFModel:
        Z = oof[list(self.inputs)]
        self.link_ = LogisticRegression(C=np.inf, max_iter=5000).fit(Z, y)
        self.oof_ = oof.assign(fold=fold, y_true=y, probability=self.link_.predict_proba(Z)[:, 1])
        return self

    def with_inputs(self, inputs: Sequence[str]) -> OVFModel:
        """The model on other ``inputs`` sharing these fitted fold radscores (only its link is
        fitted, on the same out-of-fold inputs): equal to fitting it from scratch."""
        new = clone(self).set_params(inputs=tuple(inputs))
        new.classes_, comps = self.classes_, new._comps()
        new.folds_ = [{c: f[c] for c in comps} for f in self.folds_] if comps else []
        return new._fit_link(self.oof_.drop(columns=["fold", "y_true", "probability"]),
                             self.oof_["y_true"].to_numpy(), self.oof_["fold"].to_numpy())

    def link_inputs(self, X: pd.DataFrame, prep: dict | None = None) -> pd.DataFrame:
        """Per patient: radscores (mean of the fold models) and vBMD, the link's inputs."""
        prep = prep or self.prepare(X)
        Z = pd.DataFrame({"vbmd": prep["vbmd"]}, index=prep["index"])
        if self.folds_:
            s = [self._patient_scores(f, prep["rows"]).reindex(prep["index"]) for f in self.folds_]
            Z = pd.concat([sum(s) / len(s), Z], axis=1)
        return Z[list(self.inputs)]

    def predict_proba(self, X: pd.DataFrame, prep: dict | None = None) -> np.ndarray:
        return self.link_.predict_proba(self.link_inputs(X, prep))

    def used_columns(self, columns: Sequence[str]) -> list[str]:
        """The block columns the fitted model reads (selected features of any fold, and the
        mean CT numbers of vBMD), in the order of ``columns``."""
        feats = {(c, f.split("__", 1)[1]) for fm in self.folds_ for c, m in fm.items()
                 for f in m.coef_.index} | {("cancellous", MEAN_HU_FEATURE)}
        keep = {f"{self.prefix}_{lv}_{c}_{f}" for lv in self.levels for c, f in feats}
        return [c for c in columns if c in keep]


def refit_test_auc(X_train: pd.DataFrame, X_test: pd.DataFrame, y_test):
    """``evaluate`` of :func:`vcfnb.models.permutation_test` for :class:`OVFModel`: refit on
    the labels given and return the test AUC; the label-free preparation (vertebra rows, vBMD)
    of the training and test patients is done once and reused by every permutation."""
    from sklearn.metrics import roc_auc_score

    cache: dict = {}

    def evaluate(model: OVFModel, X, y) -> float:
        if "train" not in cache:
            cache.update(train=model.prepare(X_train), test=model.prepare(X_test))
        model = model.set_params(n_jobs=1).fit_prepared(cache["train"], y)
        return float(roc_auc_score(y_test, model.predict_proba(X_test, cache["test"])[:, 1]))

    return evaluate


def selected_features(model: OVFModel) -> pd.DataFrame:
    """The LASSO-selected features of every fold radscore, with coefficient and lambda."""
    return pd.DataFrame([{"fold": j, "compartment": c, "feature": f.split("__", 1)[1],
                          "coef": v, "lambda": m.lasso_.lambda_, "n_candidates": len(m.columns_)}
                         for j, fm in enumerate(model.folds_) for c, m in fm.items()
                         for f, v in m.coef_.items()])


def radscore_formula(model: OVFModel, comp: str, digits: int = 4) -> str:
    """The compartment radscore that scores new patients (mean of the fold radscores), written
    on the raw feature values: ``Radscore = b0 + Σ c × feature``."""
    t = pd.concat([m[comp].coefficients(raw=True).set_index("feature")["coef"]
                   for m in model.folds_], axis=1).fillna(0.0).mean(axis=1)
    b0, t = t.pop("intercept"), t[t != 0].sort_values(key=abs, ascending=False)
    return f"Radscore_{comp} = {b0:.{digits}g} " + " ".join(
        f"{'+' if v >= 0 else '-'} {abs(v):.{digits}g} × {f.split('__', 1)[1]}" for f, v in t.items())


def vertebra_scores(model: OVFModel, X: pd.DataFrame) -> pd.DataFrame:
    """Each vertebra's radscores (mean of the fold models; their mean per patient is the
    patient radscore): one row per patient and level."""
    rows = vertebra_rows(X, model.levels, model.prefix, model._comps())
    s = [pd.DataFrame({f"radscore_{c}": m.radscore(rows) for c, m in f.items()}, rows.index)
         for f in model.folds_]
    return (sum(s) / len(s)).reset_index()


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
    """Patients per split: ``split, patients, positive, negative`` (the flow diagram's rows)."""
    y = cases.set_index(cases.patient_id.astype(str))[outcome].reindex(split.index) \
        if outcome in cases else pd.Series(np.nan, index=split.index)
    d = pd.DataFrame({"split": split, "y": y})
    return d.groupby("split", sort=False).agg(
        patients=("y", "size"), positive=("y", lambda v: int((v == 1).sum())),
        negative=("y", lambda v: int((v == 0).sum()))).reset_index()


def unmatched(cases: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """Patients the propensity matching left out, as rows of a cohort problems table (for the
    flow diagram's exclusion box)."""
    ids = cases.patient_id.astype(str)
    out = ~ids.isin(set(matched.patient_id.astype(str)))
    return pd.DataFrame({"row": [f"cases.csv:{i + 2}" for i in np.flatnonzero(out)],
                         "patient_id": ids[out].to_numpy(), "file": "cases.csv",
                         "problem": "not matched: left out by the 1:2 propensity matching"})


def select_rois(rois: pd.DataFrame, cases: pd.DataFrame, *, reader: str = "1") -> pd.DataFrame:
    """ROI rows of the (matched) patients and one reader."""
    keep = rois["patient_id"].isin(set(cases["patient_id"].astype(str)))
    return rois[keep & (rois["reader"].astype(str) == str(reader))].reset_index(drop=True)


def vbmd_agreement(per_vertebra: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Per-patient image vBMD (:func:`vbmd_table`) against the cohort's own ``vbmd`` column
    (QCT) when present; without it, the per-patient image vBMD."""
    v = per_vertebra.groupby("patient_id", sort=False)["vbmd"].mean()
    v = v.rename("vbmd_image").reset_index()
    if "vbmd" not in cases:
        return v
    v = v.merge(cases[["patient_id", "vbmd"]].rename(columns={"vbmd": "vbmd_cohort"}),
                on="patient_id", how="left")
    d = v.vbmd_image - v.vbmd_cohort
    return pd.DataFrame([{"patients": len(v), "mean_image": v.vbmd_image.mean(),
                          "mean_cohort": v.vbmd_cohort.mean(), "mean_difference": d.mean(),
                          "sd_difference": d.std(ddof=1),
                          "pearson_r": v.vbmd_image.corr(v.vbmd_cohort)}])


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
