"""Study glue for ``ovf_prediction_ct`` (seed 003): compartments, vBMD read-out, radscores.

Seed 003 predicts an incident thoracolumbar osteoporotic vertebral fracture from baseline CT:
each of T11, T12, L1 and L2 is split into a cortical-shell VOI and a cancellous VOI, radiomics
features per VOI are reduced per compartment (max-abs scaling → mRMR top 30 → LASSO with 10-fold
CV) to a radscore formula, the patient's radscore is the mean over the four vertebrae, and
logistic models on the radscores are compared with volumetric BMD (vBMD).

What lives here (specific to this study; generic steps are in :mod:`vcfnb.preprocess`,
:mod:`vcfnb.features`, :mod:`vcfnb.selection`, :mod:`vcfnb.stats`):

- :func:`compartment_rois` -- cortical/cancellous VOIs from whole-vertebra masks (erosion by a
  shell thickness in mm, :func:`vcfnb.preprocess.split_cortical_cancellous`), or the cohort's own
  compartment masks used as given;
- :func:`density_readout` / :func:`patient_vbmd` -- vBMD from the cancellous VOIs through a
  linear HU → BMD calibration;
- :func:`patient_features` -- per-patient compartment features = mean over the vertebrae;
- :class:`CompartmentRadscore` -- the per-compartment selection chain as one scikit-learn
  transformer (so the whole pipeline can be refitted inside a permutation test), with
  :func:`radscore_formula` and :func:`vertebra_radscores`;
- :func:`ovf_models` -- the five logistic models of the paper as pipelines;
- :func:`real_ct_cohort` -- a contract cohort of real vertebrae from ``../shared/data``
  (TPTBox sample CT, TotalSegmentator example CT) without outcome labels.

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
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from vcfnb import io, preprocess, selection

__all__ = [
    "LEVELS", "COMPARTMENTS", "parse_roi", "compartment_rois", "density_readout",
    "patient_vbmd", "patient_features", "CompartmentRadscore", "radscore_formula",
    "vertebra_radscores", "ovf_models", "MODEL_INPUTS", "real_ct_cohort", "compartment_summary",
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


def _digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _split_one(mask_path: str, rows: list[tuple[int, str, int]], shell_mm: float,
               target: str, slice_axis: int | None) -> dict[int, tuple[int, int, int, int]]:
    """Split every labelled vertebra of one mask file; write one compartment label map.

    Returns ``{row position: (cortical label, cancellous label, n cortical, n cancellous)}``.
    """
    mask = io.read_image(mask_path)
    arr = sitk.GetArrayFromImage(mask)
    out = np.zeros(arr.shape, np.uint8)
    result = {}
    for i, (pos, _roi, label) in enumerate(rows):
        region = arr == int(label)
        if not region.any():
            raise ValueError(f"{mask_path}: label {label} is absent")
        # split inside the label's bounding box + 1 voxel (identical result, much faster):
        # the image border stays a surface because the box is clipped to the image
        sl = preprocess.bbox_slices(region, margin=1)
        sub = sitk.GetImageFromArray(region[sl].astype(np.uint8))
        sub.SetSpacing(mask.GetSpacing())
        sub.SetDirection(mask.GetDirection())
        sub.SetOrigin(mask.TransformIndexToPhysicalPoint([int(s.start) for s in sl[::-1]]))
        cort, canc = preprocess.split_cortical_cancellous(sub, shell_mm, label=1,
                                                          slice_axis=slice_axis)
        c = sitk.GetArrayViewFromImage(cort) != 0
        k = sitk.GetArrayViewFromImage(canc) != 0
        lc, lk = 2 * i + 1, 2 * i + 2
        out[sl][c] = lc
        out[sl][k] = lk
        result[pos] = (lc, lk, int(c.sum()), int(k.sum()))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(mask)
    tmp = target + ".tmp.nii.gz"
    sitk.WriteImage(img, tmp, useCompression=True)
    os.replace(tmp, target)  # atomic: a killed run never leaves a half-written mask
    return result


def _split_job(args):
    (mask_path, rows, target), shell_mm, slice_axis = args
    if Path(target).is_file():  # reuse: labels follow the row order, voxels counted
        arr = sitk.GetArrayFromImage(io.read_image(target))
        return target, {pos: (2 * i + 1, 2 * i + 2, int((arr == 2 * i + 1).sum()),
                              int((arr == 2 * i + 2).sum()))
                        for i, (pos, _, _) in enumerate(rows)}
    return target, _split_one(mask_path, rows, shell_mm, target, slice_axis)


def _pmap(fn, items: list, n_jobs: int | None) -> list:
    """``[fn(x) for x in items]``, in ``n_jobs`` spawned processes when > 1 (order kept)."""
    if not n_jobs or n_jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(int(n_jobs), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(fn, items, chunksize=max(1, len(items) // (4 * int(n_jobs)))))


def compartment_rois(rois: pd.DataFrame, out_dir: str | os.PathLike, *, shell_mm: float = 2.0,
                     levels: Sequence[str] = LEVELS, slice_axis: int | None = None,
                     n_jobs: int = 1) -> pd.DataFrame:
    """Cortical-shell and cancellous VOIs for every vertebra of a cohort's ``rois`` table.

    Rows whose ``roi`` already names a compartment (``"T12_cortical"``, ``"T12_cancellous"``)
    are used as given. Rows with a whole-vertebra mask (``roi`` = a level) are split by
    :func:`vcfnb.preprocess.split_cortical_cancellous`: a voxel is cortical when its centre lies
    less than ``shell_mm`` below the mask surface (an exact erosion in mm on any spacing) --
    vcfnb's replacement for the paper's 3D U-Net compartment segmentation. All vertebrae of
    one mask file go into one derived label map (written atomically under ``out_dir``, named
    by the source mask's content hash and ``shell_mm`` so a re-run reuses it and the feature
    cache stays valid).

    Parameters
    ----------
    rois : DataFrame
        A loaded cohort's ``rois`` (absolute ``image``/``mask`` paths, ``label``). Not modified.
    out_dir : path
        Folder for the derived compartment masks.
    shell_mm : float
        Cortical shell thickness in mm.
    levels : sequence of str
        Levels to keep (others are dropped).
    slice_axis : int, optional
        Split slice by slice perpendicular to this image axis (default 3-D).
    n_jobs : int
        Parallel processes for the split.

    Returns
    -------
    DataFrame
        One row per VOI: the id columns of ``rois``, ``roi`` = ``<level>_<compartment>``,
        ``image``, ``mask``, ``label``, plus ``level``, ``compartment``, ``derived`` (True when
        split here) and ``n_voxels`` (derived rows; NaN for given ones).

    Examples
    --------
    >>> import tempfile, vcfnb as vc  # doctest: +SKIP
    >>> c = vc.io.load_cohort(vc.synth.make_cohort("ovf", tempfile.mkdtemp()))  # doctest: +SKIP
    >>> compartment_rois(c.rois, tempfile.mkdtemp()).compartment.value_counts()  # doctest: +SKIP
    """
    if shell_mm <= 0:
        raise ValueError(f"shell_mm must be > 0, got {shell_mm}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parsed = [parse_roi(r) for r in rois["roi"]]
    lv = pd.Series([p[0] for p in parsed], index=rois.index)
    comp = pd.Series([p[1] for p in parsed], index=rois.index)
    keep = lv.isin(list(levels))
    given = rois.loc[keep & comp.notna()].copy()
    given["level"] = lv[given.index]
    given["compartment"] = comp[given.index]
    given["derived"] = False
    given["n_voxels"] = np.nan
    whole = rois.loc[keep & comp.isna()]
    derived_rows = []
    if len(whole):
        jobs = []
        for mask_path, grp in whole.groupby("mask", sort=False):
            rows = [(pos, r.roi, int(r.label)) for pos, r in grp.iterrows()]
            key = hashlib.sha256(f"{_digest(mask_path)}|{shell_mm:.6g}|{slice_axis}|"
                                 f"{[(r[1], r[2]) for r in rows]}".encode()).hexdigest()[:20]
            target = str(out_dir / f"{grp.patient_id.iat[0]}_compartments_{key}.nii.gz")
            jobs.append((mask_path, rows, target))

        # each split takes milliseconds: worker start-up only pays off for many masks
        results = _pmap(_split_job, [(j, shell_mm, slice_axis) for j in jobs],
                        n_jobs if len(jobs) >= 200 else 1)
        for target, res in results:
            for pos, (lc, lk, nc, nk) in res.items():
                src = whole.loc[pos]
                for compartment, lab, n in (("cortical", lc, nc), ("cancellous", lk, nk)):
                    row = src.to_dict()
                    row.update(roi=f"{src.roi}_{compartment}", mask=target, label=lab,
                               level=src.roi, compartment=compartment, derived=True, n_voxels=n)
                    derived_rows.append(row)
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
                 median_voxels=("n_voxels", "median")).reset_index()


def density_readout(voi: pd.DataFrame, *, slope: float, intercept: float,
                    compartment: str = "cancellous") -> pd.DataFrame:
    """Mean CT number and calibrated density of each VOI of one compartment.

    ``vBMD [mg/cm³] = slope × mean HU + intercept`` -- a linear calibration as in phantom or
    phantomless QCT (seed 003 used a Mindways phantom and a 100 mm² ROI in the cancellous
    compartment; here the whole cancellous VOI is averaged).

    Returns
    -------
    DataFrame
        ``patient_id, level, roi, n_voxels, mean_hu, sd_hu, vbmd``.
    """
    rows = []
    sub = voi[voi["compartment"] == compartment]
    for image_path, grp in sub.groupby("image", sort=False):
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
    """Per-patient vBMD = mean over the patient's levels (T11-L2), named ``vbmd``."""
    return readout.groupby("patient_id", sort=False)["vbmd"].mean().rename("vbmd")


def patient_features(features: pd.DataFrame, voi: pd.DataFrame) -> pd.DataFrame:
    """Per-patient compartment features = mean over the vertebrae.

    ``features`` is the output of :func:`vcfnb.features.extract` on ``voi`` (same row order).
    Columns become ``<compartment>__<feature>``; one row per patient (index ``patient_id``).
    Because a radscore is linear in the (max-abs scaled) features, the radscore of these means
    equals the mean of the four vertebrae's radscores -- the paper's patient score.
    """
    feat_cols = [c for c in features.columns if c not in ("patient_id", "roi", "sequence", "reader")
                 and pd.api.types.is_numeric_dtype(features[c])]
    df = features[feat_cols].copy()
    df["patient_id"] = voi["patient_id"].to_numpy()
    df["compartment"] = voi["compartment"].to_numpy()
    parts = []
    for comp in COMPARTMENTS:
        sub = df[df.compartment == comp].drop(columns="compartment")
        if sub.empty:
            continue
        m = sub.groupby("patient_id", sort=False).mean()
        m.columns = [f"{comp}__{c}" for c in m.columns]
        parts.append(m)
    return pd.concat(parts, axis=1)


def _usable(X: pd.DataFrame) -> list[str]:
    """Columns that are finite everywhere and not constant."""
    ok = np.isfinite(X.to_numpy(float)).all(axis=0) & (X.nunique() > 1).to_numpy()
    return list(X.columns[ok])


class CompartmentRadscore(TransformerMixin, BaseEstimator):
    """One compartment's radscore: max-abs scaling → mRMR top ``k`` → LASSO with CV.

    mRMR is :class:`vcfnb.selection.MRMRSelector` (passing its features on in mRMR order, as
    the study always has: liblinear's LASSO result depends on column order) and LASSO
    :class:`vcfnb.selection.LassoSelector`.

    Works on per-patient feature tables whose columns start with ``prefix``
    (:func:`patient_features`); everything is fitted on the rows given to ``fit`` only
    (training patients, or a fold's training rows). ``transform`` returns the radscore
    ``intercept + Σ coef × scaled feature`` as one column named ``radscore_<compartment>``.

    Parameters
    ----------
    compartment : {"cortical", "cancellous"}
    k : int
        mRMR features kept before LASSO (seed 003: 30).
    cv : int
        LASSO folds (seed 003: 10).
    rule : {"min", "1se"}
        LASSO lambda rule.
    lam : float, optional
        Fixed lambda instead of CV (seed 003 reported 0.037 cortical, 0.032 cancellous).
    random_state : int, optional
    solver : {"liblinear", "saga"}
        LASSO solver (:class:`vcfnb.selection.LassoSelector`). ``liblinear`` is ~20× faster on
        these small, nearly separable problems (it penalises the intercept mildly); ``saga``
        matches glmnet to ~1e-6.

    Attributes
    ----------
    columns_ : list of str
        Usable input columns (finite, non-constant on the training rows).
    pipeline_ : Pipeline
        The fitted scaler → mRMR → LASSO chain.
    coef_ : Series
        Radscore coefficients on the max-abs scaled features (index: feature names without
        the compartment prefix). ``intercept_`` float. ``scale_`` Series of max-abs scales.

    Examples
    --------
    >>> g = np.random.default_rng(0); X = pd.DataFrame(g.normal(size=(80, 12)), columns=[f"cortical__f{i}" for i in range(12)])
    >>> y = (X.iloc[:, 0] + g.normal(size=80) > 0).astype(int)
    >>> CompartmentRadscore("cortical", k=5, cv=5, random_state=0).fit(X, y).transform(X).shape
    (80, 1)
    """

    def __init__(self, compartment: str = "cortical", k: int = 30, cv: int = 10,
                 rule: str = "min", lam: float | None = None, random_state: int | None = None,
                 solver: str = "liblinear"):
        self.solver = solver
        self.compartment = compartment
        self.k = k
        self.cv = cv
        self.rule = rule
        self.lam = lam
        self.random_state = random_state

    def _cols(self, X: pd.DataFrame) -> list[str]:
        pre = f"{self.compartment}__"
        cols = [c for c in X.columns if str(c).startswith(pre)]
        if not cols:
            raise ValueError(f"no column starts with {pre!r}")
        return cols

    def fit(self, X: pd.DataFrame, y) -> "CompartmentRadscore":
        X = pd.DataFrame(X)
        self.columns_ = _usable(X[self._cols(X)])
        self.pipeline_ = Pipeline([
            ("maxabs", selection.MaxAbsScaler()),
            ("mrmr", selection.MRMRSelector(k=self.k, order="ranking")),
            ("lasso", selection.LassoSelector(cv=self.cv, rule=self.rule, lam=self.lam,
                                              random_state=self.random_state, min_features=1,
                                              solver=self.solver, lambda_min_ratio=0.01,
                                              n_lambdas=40, tol=1e-3, max_iter=2000)),
        ]).set_output(transform="pandas")
        self.pipeline_.fit(X[self.columns_], np.asarray(y))
        lasso = self.pipeline_.named_steps["lasso"]
        pre = len(self.compartment) + 2
        self.coef_ = pd.Series(lasso.coef_.to_numpy(float),
                               index=[str(c)[pre:] for c in lasso.coef_.index], name="coef")
        self.intercept_ = float(lasso.intercept_)
        scaler = self.pipeline_.named_steps["maxabs"]
        self.scale_ = pd.Series(scaler.scale_, index=[c[pre:] for c in self.columns_])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = pd.DataFrame(X)
        pre = f"{self.compartment}__"
        Z = X[[pre + c for c in self.coef_.index]].to_numpy(float) / \
            self.scale_[self.coef_.index].to_numpy(float)
        score = self.intercept_ + Z @ self.coef_.to_numpy(float)
        return pd.DataFrame({f"radscore_{self.compartment}": score}, index=X.index)

    def get_feature_names_out(self, input_features=None):
        return np.array([f"radscore_{self.compartment}"], dtype=object)

    @property
    def lasso_(self):
        """The fitted :class:`vcfnb.selection.LassoSelector` (CV curve ``cv_results_``, ``path_``)."""
        return self.pipeline_.named_steps["lasso"]


def radscore_formula(model: CompartmentRadscore, *, digits: int = 4) -> str:
    """The radscore as the paper prints it: ``Radscore = b0 + c1 * feature1 + ...``.

    Features enter max-abs scaled (divided by their training maximum absolute value).
    """
    terms = [f"{model.intercept_:.{digits}f}"]
    for name, c in model.coef_.sort_values(key=np.abs, ascending=False).items():
        terms.append(f"{'+' if c >= 0 else '-'} {abs(c):.{digits}f} * {name}")
    return f"Radscore_{model.compartment} = " + " ".join(terms)


def vertebra_radscores(model: CompartmentRadscore, features: pd.DataFrame,
                       voi: pd.DataFrame) -> pd.DataFrame:
    """Each vertebra's radscore for one compartment (the paper's 4 radscores per patient).

    Returns ``patient_id, level, radscore``; their mean per patient equals
    ``model.transform`` of :func:`patient_features` (linearity).
    """
    sel = (voi["compartment"] == model.compartment).to_numpy()
    Z = features.loc[sel, list(model.coef_.index)].to_numpy(float) / \
        model.scale_[model.coef_.index].to_numpy(float)
    return pd.DataFrame({"patient_id": voi.loc[sel, "patient_id"].to_numpy(),
                         "level": voi.loc[sel, "level"].to_numpy(),
                         "radscore": model.intercept_ + Z @ model.coef_.to_numpy(float)})


class _Passthrough(TransformerMixin, BaseEstimator):
    def __init__(self, columns: Sequence[str] = ("vbmd",)):
        self.columns = columns

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return pd.DataFrame(X)[list(self.columns)]

    def get_feature_names_out(self, input_features=None):
        return np.array(list(self.columns), dtype=object)


def ovf_models(*, k: int = 30, cv: int = 10, rule: str = "min",
               lam: dict | None = None, random_state: int | None = None) -> dict[str, Pipeline]:
    """The five logistic models of seed 003 as unfitted pipelines on per-patient tables.

    Each pipeline takes the per-patient table (compartment features + ``vbmd``), builds the
    inputs it needs (:data:`MODEL_INPUTS`) -- compartment radscores by
    :class:`CompartmentRadscore`, fitted on the rows given to ``fit`` only -- and ends in an
    (unpenalised) logistic regression. Refitting a pipeline therefore refits the whole chain,
    which is what the permutation test needs.

    Parameters
    ----------
    lam : dict, optional
        Fixed LASSO lambda per compartment (``{"cortical": 0.037, "cancellous": 0.032}``).
    """
    lam = lam or {}
    out = {}
    for name, inputs in MODEL_INPUTS.items():
        parts = []
        for comp in COMPARTMENTS:
            if f"radscore_{comp}" in inputs:
                parts.append((comp, CompartmentRadscore(comp, k=k, cv=cv, rule=rule,
                                                        lam=lam.get(comp),
                                                        random_state=random_state),
                              make_column_selector(pattern=f"^{comp}__")))
        if "vbmd" in inputs:
            parts.append(("vbmd", _Passthrough(("vbmd",)), ["vbmd"]))
        ct = ColumnTransformer([(n, t, cols) for n, t, cols in parts], remainder="drop",
                               verbose_feature_names_out=False)
        out[name] = Pipeline([("inputs", ct),
                              ("logistic", LogisticRegression(C=np.inf, max_iter=5000))])
    return out


# --------------------------------------------------------------------------------------------
# real CT
# --------------------------------------------------------------------------------------------
_TOTALSEG_LEVELS = {33: "T11", 32: "T12", 31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5"}
_TPTBOX_LEVELS = {21: "L2", 22: "L3", 23: "L4"}


def real_ct_cohort(shared_data: str | os.PathLike, out_dir: str | os.PathLike, *,
                   totalseg_levels: Sequence[str] = ("T12", "L1", "L2")) -> Path:
    """Build a contract cohort of real vertebrae (no outcome) from ``../shared/data``.

    - ``tptbox/sample_ct``: L2-L4 of a 1.5 mm CT with TPTBox's own compartments -- vertebral
      body cortical shell (subregion 49) and interior (50) within each vertebra label -- written
      as ``<level>_cortical`` / ``<level>_cancellous`` rows, i.e. **already split** (used as
      given by :func:`compartment_rois`);
    - ``totalseg/example_ct.nii.gz``: ``totalseg_levels`` of a 3 mm abdominal CT as
      **whole vertebral-body** masks (TotalSegmentator vertebra label ∩ vertebral-body mask),
      to be split by erosion.

    The CT files are referenced where they are (absolute paths; nothing is copied); only the
    derived label maps are written into ``out_dir``. ``cases.csv`` has no outcome column:
    real outcome labels do not exist for these scans. Levels outside T11-L2 (L3, L4 of the
    TPTBox crop) are kept so the compartment split and read-out can be shown on them; the
    study's level filter decides what is used.

    Returns
    -------
    Path
        The cohort folder (``cases.csv``, ``rois.csv``, ``masks/``, ``README.md``).
    """
    base = Path(shared_data)
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    cases, rois = [], []
    # TPTBox: already split compartments
    tp = base / "tptbox" / "sample_ct"
    ct = tp / "sub-ct_label-22_ct.nii.gz"
    vert = sitk.GetArrayFromImage(io.read_image(tp / "sub-ct_seg-vert_label-22_msk.nii.gz"))
    sub_img = io.read_image(tp / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    sub = sitk.GetArrayFromImage(sub_img)
    lab = np.zeros(vert.shape, np.uint8)
    k = 0
    for v, level in _TPTBOX_LEVELS.items():
        for compartment, s in (("cortical", 49), ("cancellous", 50)):
            m = (vert == v) & (sub == s)
            if not m.any():
                continue
            k += 1
            lab[m] = k
            rois.append({"patient_id": "tptbox_sample_ct", "roi": f"{level}_{compartment}",
                         "sequence": "CT", "reader": "1", "image": str(ct.resolve()),
                         "mask": "masks/tptbox_sample_ct_compartments.nii.gz", "label": k})
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(sub_img)
    sitk.WriteImage(img, str(out / "masks" / "tptbox_sample_ct_compartments.nii.gz"), True)
    cases.append({"patient_id": "tptbox_sample_ct", "source": "TPTBox sample_ct (1.5 mm)",
                  "masks": "given compartments (49 cortical shell, 50 interior)"})
    # TotalSegmentator example CT: whole vertebral bodies
    ts = base / "totalseg"
    ct2 = ts / "example_ct.nii.gz"
    seg_img = io.read_image(ts / "spine_report" / "totalseg.nii.gz")
    seg = sitk.GetArrayFromImage(seg_img)
    body = sitk.GetArrayFromImage(io.read_image(ts / "spine_report" /
                                                "totalseg_vertebrae_body.nii.gz")) == 1
    lab = np.zeros(seg.shape, np.uint8)
    names = {v: k for k, v in _TOTALSEG_LEVELS.items()}
    for level in totalseg_levels:
        m = (seg == names[level]) & body
        if not m.any():
            continue
        lab[m] = names[level]
        rois.append({"patient_id": "totalseg_example_ct", "roi": level, "sequence": "CT",
                     "reader": "1", "image": str(ct2.resolve()),
                     "mask": "masks/totalseg_example_ct_bodies.nii.gz", "label": names[level]})
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(seg_img)
    sitk.WriteImage(img, str(out / "masks" / "totalseg_example_ct_bodies.nii.gz"), True)
    cases.append({"patient_id": "totalseg_example_ct", "source": "TotalSegmentator example CT (3 mm)",
                  "masks": "whole vertebral bodies (vertebra label ∩ body mask)"})
    io.write_table(pd.DataFrame(cases), out / "cases.csv")
    io.write_table(pd.DataFrame(rois), out / "rois.csv")
    io.write_text("# Real CT vertebrae (no outcome labels)\n\nBuilt by "
                  "vcfnb.studies.ovf.real_ct_cohort from ../shared/data (TPTBox sample CT, "
                  "TotalSegmentator example CT). Images are referenced in place; only derived "
                  "label maps are stored here. There is no outcome: these scans test the "
                  "compartment split, extraction and density read-out on real bone.\n",
                  out / "README.md")
    return out


# --------------------------------------------------------------------------------------------
# cohort construction, split, models, evaluation
# --------------------------------------------------------------------------------------------
def has_outcome(cases: pd.DataFrame, outcome: str = "outcome") -> bool:
    """True when ``cases`` carries a usable 0/1 outcome with both classes."""
    return outcome in cases and cases[outcome].notna().all() and cases[outcome].nunique() == 2


def match_controls(cases: pd.DataFrame, *, outcome: str = "outcome",
                   covariates: Sequence[str] = ("age", "sex"), ratio: int = 2,
                   caliper: float | None = 0.2, rng=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Propensity-score matching of fracture patients to controls from the pool.

    Nearest neighbour on the logit of the propensity score (logistic regression of the outcome
    on ``covariates``), 1:``ratio`` without replacement, caliper in SDs of the logit
    (:func:`vcfnb.stats.propensity_match`, checked against ``MatchIt``). Without an outcome
    (real scans) every case is kept and the balance table is empty.

    Returns
    -------
    (DataFrame, DataFrame)
        The matched cases (with ``propensity``, ``match_id``) and the balance table
        (:func:`vcfnb.stats.balance_table`: SMD before/after).
    """
    from vcfnb import stats

    if not has_outcome(cases, outcome):
        return cases.copy(), pd.DataFrame(columns=["covariate", "smd_before", "smd_after"])
    matched = stats.propensity_match(cases, outcome, list(covariates), ratio=ratio,
                                     caliper=caliper, rng=rng)
    balance = stats.balance_table(cases, outcome, list(covariates), matched=matched)
    n_t = int((matched[outcome] == 1).sum())
    balance["n_treated_before"] = int((cases[outcome] == 1).sum())
    balance["n_control_before"] = int((cases[outcome] == 0).sum())
    balance["n_treated_after"] = n_t
    balance["n_control_after"] = int((matched[outcome] == 0).sum())
    return matched.reset_index(drop=True), balance


def split_patients(cases: pd.DataFrame, *, outcome: str = "outcome", test_size: float = 0.3,
                   random_state: int | None = None) -> pd.Series:
    """Stratified 7:3 split by patient → Series ``split`` (train/test) indexed by patient_id.

    One row per patient, so no patient's vertebrae straddle train and test. Without an
    outcome every patient is ``"unlabelled"``.
    """
    from sklearn.model_selection import train_test_split

    ids = cases["patient_id"].astype(str).to_numpy()
    if not has_outcome(cases, outcome):
        return pd.Series("unlabelled", index=pd.Index(ids, name="patient_id"), name="split")
    tr, te = train_test_split(ids, test_size=test_size, stratify=cases[outcome].to_numpy(),
                              random_state=random_state)
    s = pd.Series("train", index=pd.Index(ids, name="patient_id"), name="split")
    s[list(te)] = "test"
    return s


def fit_radscores(table: pd.DataFrame, y, *, k: int = 30, cv: int = 10, rule: str = "min",
                  lam: dict | None = None, random_state: int | None = None
                  ) -> dict[str, CompartmentRadscore]:
    """Fit one :class:`CompartmentRadscore` per compartment on the training patients."""
    lam = lam or {}
    return {c: CompartmentRadscore(c, k=k, cv=cv, rule=rule, lam=lam.get(c),
                                   random_state=random_state).fit(table, y)
            for c in COMPARTMENTS}


def model_inputs(table: pd.DataFrame, radscores: dict[str, CompartmentRadscore]) -> pd.DataFrame:
    """Per-patient model inputs: ``radscore_cortical, radscore_cancellous, vbmd``."""
    parts = [m.transform(table) for m in radscores.values()]
    out = pd.concat(parts, axis=1)
    if "vbmd" in table:
        out["vbmd"] = table["vbmd"].to_numpy(float)
    return out


def fit_predict_models(inputs: pd.DataFrame, y, split: pd.Series,
                       models: Sequence[str] = tuple(MODEL_INPUTS)) -> pd.DataFrame:
    """Fit each logistic model on the training patients; predicted probabilities for all.

    Returns a long table ``patient_id, split, outcome, model, prob``.
    """
    y = pd.Series(np.asarray(y), index=inputs.index)
    tr = (split.reindex(inputs.index) == "train").to_numpy()
    rows = []
    for name in models:
        cols = MODEL_INPUTS[name]
        lr = LogisticRegression(C=np.inf, max_iter=5000).fit(inputs.loc[tr, cols], y[tr])
        p = lr.predict_proba(inputs[cols])[:, 1]
        rows.append(pd.DataFrame({"patient_id": inputs.index, "split": split.reindex(inputs.index).to_numpy(),
                                  "outcome": y.to_numpy(), "model": name, "prob": p}))
    return pd.concat(rows, ignore_index=True)


def performance_table(pred: pd.DataFrame, *, models: Sequence[str] | None = None,
                      rng=None) -> pd.DataFrame:
    """Tables 2-5: per model and split AUC (DeLong CI), accuracy, sensitivity, specificity,
    PPV, NPV at the training Youden cutoff (:func:`vcfnb.stats.model_report`)."""
    from vcfnb import stats

    out = []
    for name in (models or pred["model"].unique()):
        d = pred[pred.model == name]
        tr, te = d[d.split == "train"], d[d.split == "test"]
        out.append(stats.model_report(tr.outcome.to_numpy(), tr.prob.to_numpy(),
                                      te.outcome.to_numpy(), te.prob.to_numpy(), model=name,
                                      rng=rng))
    return pd.concat(out, ignore_index=True)


def delong_table(pred: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Table 6: paired DeLong p-values between models on the training and the test cohort."""
    from vcfnb import stats

    rows = []
    for a, b in pairs:
        row = {"comparison": f"{a} vs {b}"}
        for split in ("train", "test"):
            da = pred[(pred.model == a) & (pred.split == split)].sort_values("patient_id")
            db = pred[(pred.model == b) & (pred.split == split)].sort_values("patient_id")
            r = stats.delong_test(da.outcome.to_numpy(), da.prob.to_numpy(), db.prob.to_numpy())
            row[f"auc_a_{split}"] = r.auc_a
            row[f"auc_b_{split}"] = r.auc_b
            row[f"p_{split}"] = r.p_value
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_and_dca(pred: pd.DataFrame, split: str, models: Sequence[str], *,
                        n_bins: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibration curves (model name carries the Hosmer-Lemeshow p) and decision curves."""
    from vcfnb import stats

    cal, probs, y = [], {}, None
    for name in models:
        d = pred[(pred.model == name) & (pred.split == split)].sort_values("patient_id")
        y = d.outcome.to_numpy()
        hl = stats.hosmer_lemeshow(y, d.prob.to_numpy(), groups=min(10, max(3, len(d) // 8)))
        c = stats.calibration_curve(y, d.prob.to_numpy(), n_bins=n_bins)
        c["model"] = f"{name} (HL p = {hl.p_value:.2f})"
        cal.append(c)
        probs[name] = d.prob.to_numpy()
    dca = stats.decision_curve(y, probs, np.linspace(0.01, 0.8, 80))
    return pd.concat(cal, ignore_index=True), dca


def permutation_test(table: pd.DataFrame, y, split: pd.Series, *, model: str = "vertebral",
                     n_permutations: int = 20, k: int = 30, cv: int = 10, rule: str = "min",
                     lam: dict | None = None, random_state: int | None = None, rng=None,
                     n_jobs: int = 1) -> pd.DataFrame:
    """Whole-pipeline label-permutation test of one model's test AUC.

    The training labels are shuffled and everything label-dependent (max-abs scaling, mRMR,
    LASSO CV, logistic regression) is refitted on the training patients; the test AUC against
    the true test labels forms the null distribution. Uses
    :func:`vcfnb.models.permutation_test` when available.

    Returns
    -------
    DataFrame
        ``permutation, auc`` (``permutation = 0`` is the real labels).
    """
    g = np.random.default_rng(rng)
    y = np.asarray(y)
    tr = (split.reindex(table.index) == "train").to_numpy()
    pipe = ovf_models(k=k, cv=cv, rule=rule, lam=lam, random_state=random_state)[model]
    Xtr, Xte, ytr, yte = table[tr], table[~tr], y[tr], y[~tr]

    perms = [ytr] + [g.permutation(ytr) for _ in range(int(n_permutations))]
    aucs = _pmap(_perm_auc, [(pipe, Xtr, labels, Xte, yte) for labels in perms], n_jobs)
    return pd.DataFrame({"permutation": np.arange(len(perms)), "auc": aucs})


def _perm_auc(args) -> float:
    from sklearn.metrics import roc_auc_score

    pipe, Xtr, labels, Xte, yte = args
    fitted = clone(pipe).fit(Xtr, labels)
    return float(roc_auc_score(yte, fitted.predict_proba(Xte)[:, 1]))


# --------------------------------------------------------------------------------------------
# notebook helpers: cohort resolution, tables
# --------------------------------------------------------------------------------------------
#: (table name, models, split) of seed 003's tables 2-5
EFFICIENCY_TABLES = (
    ("table2_radscore_models_train", ["vertebral", "cancellous", "cortical"], "train"),
    ("table3_radscore_models_test", ["vertebral", "cancellous", "cortical"], "test"),
    ("table4_vbmd_models_train", ["combined", "vertebral", "vBMD"], "train"),
    ("table5_vbmd_models_test", ["combined", "vertebral", "vBMD"], "test"),
)


def resolve_cohort(run):
    """The run's cohort: as resolved by :func:`vcfnb.report.start_run`, or -- with the
    ``real_ct`` parameter -- the real-CT cohort built by :func:`real_ct_cohort` under
    ``data/cohorts/ovf-real-ct`` (no outcome; ``run.simulated`` is False)."""
    p = run.params
    if not p.get("real_ct"):
        return run.cohort
    shared = Path(p.get("shared_data") or "../shared/data")
    if not shared.is_absolute():
        shared = (run.root / shared).resolve()
    if not (shared / "tptbox" / "sample_ct").is_dir() or not (shared / "totalseg").is_dir():
        raise FileNotFoundError(f"real_ct needs {shared}/tptbox/sample_ct and {shared}/totalseg "
                                "(the shared real-data folder); it is absent on this machine")
    folder = Path(p.get("cohort_dir") or run.root / "data" / "cohorts" / "ovf-real-ct")
    if not folder.is_absolute():
        folder = run.root / folder
    real_ct_cohort(shared, folder)
    run.cohort = io.load_cohort(folder, require_outcome=False)
    run.simulated = False
    run.note("real CT vertebrae (TPTBox sample CT, TotalSegmentator example CT): no outcome labels")
    return run.cohort


def table1(cases: pd.DataFrame, variables: Sequence[str], *, outcome: str = "outcome") -> pd.DataFrame:
    """Table 1: baseline characteristics by group (fracture vs non-fracture)."""
    from vcfnb import stats

    if not has_outcome(cases, outcome):
        return pd.DataFrame({"note": ["no outcome labels: no group comparison"]})
    d = cases.copy()
    d["group"] = np.where(d[outcome] == 1, "fracture", "non-fracture")
    vars_ = [v for v in variables if v in d]
    return stats.baseline_table(d, "group", vars_)


def split_counts(cases: pd.DataFrame, split: pd.Series, *, outcome: str = "outcome") -> pd.DataFrame:
    """Patients per split and outcome."""
    d = cases.assign(split=split.reindex(cases.patient_id.astype(str)).to_numpy())
    if outcome not in d:
        return d.groupby("split").size().rename("patients").reset_index()
    return (d.groupby(["split", outcome]).size().rename("patients").reset_index()
            .sort_values(["split", outcome], ascending=[False, True], ignore_index=True))


def select_rois(rois: pd.DataFrame, cases: pd.DataFrame, *, reader: str = "1") -> pd.DataFrame:
    """ROI rows of the (matched) patients and one reader."""
    r = rois[rois["patient_id"].isin(set(cases["patient_id"].astype(str)))]
    if "reader" in r and (r["reader"].astype(str) == str(reader)).any():
        r = r[r["reader"].astype(str) == str(reader)]
    return r.reset_index(drop=True)


def feature_summary(features: pd.DataFrame, voi: pd.DataFrame) -> pd.DataFrame:
    """Feature counts per image type and class, and VOIs extracted, per compartment."""
    cols = [c for c in features.columns if c not in ("patient_id", "roi", "sequence", "reader")]
    rows = []
    for c in cols:
        parts = c.split("_")
        image_type = parts[0].split("-")[0] if parts else c
        rows.append({"image_type": image_type, "feature_class": parts[1] if len(parts) > 2 else ""})
    t = pd.DataFrame(rows).value_counts().rename("features").reset_index()
    t = t.sort_values(["image_type", "feature_class"], ignore_index=True)
    ok = features[cols].notna().all(axis=1).to_numpy()
    t.attrs["vois"] = int(len(voi))
    total = pd.DataFrame([{"image_type": "all", "feature_class": f"{len(voi)} VOIs, "
                           f"{int(ok.sum())} complete", "features": len(cols)}])
    return pd.concat([t, total], ignore_index=True)


def vbmd_agreement(density: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Per-patient image-derived vBMD beside the cohort's own ``vbmd`` column (when present)."""
    v = patient_vbmd(density).reset_index()
    v = v.rename(columns={"vbmd": "vbmd_image"})
    if "vbmd" in cases:
        v = v.merge(cases[["patient_id", "vbmd"]].rename(columns={"vbmd": "vbmd_cohort"}),
                    on="patient_id", how="left")
        d = v.vbmd_image - v.vbmd_cohort
        r = float(np.corrcoef(v.vbmd_image, v.vbmd_cohort)[0, 1]) if len(v) > 2 else np.nan
        return pd.DataFrame([{"patients": len(v), "mean_image": v.vbmd_image.mean(),
                              "mean_cohort": v.vbmd_cohort.mean(), "mean_difference": d.mean(),
                              "sd_difference": d.std(ddof=1), "pearson_r": r}])
    return v


def require_outcome(run, cases: pd.DataFrame, outcome: str = "outcome") -> None:
    """Stop the run cleanly (:meth:`vcfnb.report.Run.stop`) when there are no outcome labels."""
    if not has_outcome(cases, outcome):
        run.stop("no outcome labels in this cohort (real scans without incident-fracture "
                 "follow-up): compartments, features and vBMD are computed above; the radscore "
                 "and logistic models need a 0/1 outcome per patient")


def patient_table(features: pd.DataFrame, voi: pd.DataFrame, density: pd.DataFrame,
                  cases: pd.DataFrame, split: pd.Series, *, outcome: str = "outcome"
                  ) -> pd.DataFrame:
    """One row per patient: compartment features (means over vertebrae), ``vbmd`` (from the
    images), ``outcome`` and ``split``; index ``patient_id``."""
    t = patient_features(features, voi)
    t["vbmd"] = patient_vbmd(density).reindex(t.index)
    c = cases.set_index(cases.patient_id.astype(str))
    t["outcome"] = c[outcome].reindex(t.index).astype(int)
    t["split"] = split.reindex(t.index)
    return t


def selected_features(radscores: dict[str, CompartmentRadscore]) -> pd.DataFrame:
    """The LASSO-selected features per compartment with coefficients and the chosen lambda."""
    rows = []
    for name, rs in radscores.items():
        for f, c in rs.coef_.items():
            rows.append({"compartment": name, "feature": f, "coef": c, "lambda": rs.lasso_.lambda_,
                         "n_candidates": len(rs.columns_)})
    return pd.DataFrame(rows)


def vertebra_scores(radscores: dict[str, CompartmentRadscore], features: pd.DataFrame,
                    voi: pd.DataFrame) -> pd.DataFrame:
    """Each vertebra's cortical and cancellous radscore (wide: one row per patient and level)."""
    parts = []
    for name, rs in radscores.items():
        v = vertebra_radscores(rs, features, voi).rename(columns={"radscore": f"radscore_{name}"})
        parts.append(v.set_index(["patient_id", "level"]))
    return pd.concat(parts, axis=1).reset_index()


def record_metrics(run, perf: pd.DataFrame) -> None:
    """Every model's train/test AUC with its DeLong CI into ``metrics.json``."""
    for _, r in perf.iterrows():
        run.metric(str(r.model), str(r.split), auc=r.auc, ci_low=r.auc_ci_low,
                   ci_high=r.auc_ci_high, n=int(r.n))


def efficiency_table(perf: pd.DataFrame, models: Sequence[str], split: str) -> pd.DataFrame:
    """Seed 003's tables 2-5 layout: accuracy, sensitivity, specificity, PPV, NPV, AUC (CI)."""
    d = perf[(perf.split == split) & perf.model.isin(models)].set_index("model").loc[list(models)]
    out = d[["n", "accuracy", "sensitivity", "specificity", "ppv", "npv", "auc", "auc_ci_low",
             "auc_ci_high", "cutoff"]].copy()
    out.columns = ["n", "accuracy", "sensitivity", "specificity", "PPV", "NPV", "AUC",
                   "AUC_ci_low", "AUC_ci_high", "cutoff"]
    for m in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        out[f"{m}_count"] = d[f"{m}_count"]
    return out.reset_index()


def roc_table(pred: pd.DataFrame, split: str, models: Sequence[str]) -> pd.DataFrame:
    """Long ``model, y_true, score`` table for :func:`vcfnb.plots.plot_roc`."""
    d = pred[(pred.split == split) & pred.model.isin(models)]
    return pd.DataFrame({"model": d.model.to_numpy(), "y_true": d.outcome.to_numpy(),
                         "score": d.prob.to_numpy()})


def permutation_summary(run, null: pd.DataFrame) -> pd.DataFrame:
    """Observed test AUC, null mean/SD and the permutation p ``(1 + #null >= obs) / (1 + n)``."""
    obs = float(null.auc.iat[0])
    nul = null.auc.iloc[1:].to_numpy(float)
    p = (1 + np.sum(nul >= obs)) / (1 + len(nul))
    out = pd.DataFrame([{"model": "vertebral", "observed_test_auc": obs, "null_mean": nul.mean(),
                         "null_sd": nul.std(ddof=1) if len(nul) > 1 else np.nan,
                         "n_permutations": len(nul), "p_value": p}])
    entry = run.models.get("vertebral", {}).get("test")
    if entry is not None:  # the p-value travels with the model's test entry in metrics.json
        run.metric("vertebral", "test", auc=entry["auc"], ci_low=entry["ci_low"],
                   ci_high=entry["ci_high"], n=entry["n"], permutation_p=float(p),
                   permutation_null_mean=float(nul.mean()), n_permutations=int(len(nul)))
    return out
