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
from sklearn.compose import ColumnTransformer
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
    arr = sitk.GetArrayViewFromImage(mask)
    out = np.zeros(arr.shape, np.uint8)
    result = {}
    for i, (pos, _roi, label) in enumerate(rows):
        cort, canc = preprocess.split_cortical_cancellous(mask, shell_mm, label=int(label),
                                                          slice_axis=slice_axis)
        c = sitk.GetArrayViewFromImage(cort) != 0
        k = sitk.GetArrayViewFromImage(canc) != 0
        lc, lk = 2 * i + 1, 2 * i + 2
        out[c] = lc
        out[k] = lk
        result[pos] = (lc, lk, int(c.sum()), int(k.sum()))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(mask)
    tmp = target + ".tmp.nii.gz"
    sitk.WriteImage(img, tmp, useCompression=True)
    os.replace(tmp, target)  # atomic: a killed run never leaves a half-written mask
    return result


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

        def work(job):
            mask_path, rows, target = job
            if Path(target).is_file():  # reuse: labels follow the row order, voxels counted
                arr = sitk.GetArrayViewFromImage(io.read_image(target))
                return target, {pos: (2 * i + 1, 2 * i + 2, int((arr == 2 * i + 1).sum()),
                                      int((arr == 2 * i + 2).sum()))
                                for i, (pos, _, _) in enumerate(rows)}
            return target, _split_one(mask_path, rows, shell_mm, target, slice_axis)

        if n_jobs and n_jobs > 1 and len(jobs) > 1:
            from joblib import Parallel, delayed
            results = Parallel(n_jobs=n_jobs)(delayed(work)(j) for j in jobs)
        else:
            results = [work(j) for j in jobs]
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
        img = sitk.GetArrayViewFromImage(io.read_image(image_path)).astype(float)
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
                 rule: str = "min", lam: float | None = None, random_state: int | None = None):
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
            ("mrmr", selection.MRMRSelector(k=self.k)),
            ("lasso", selection.LassoSelector(cv=self.cv, rule=self.rule, lam=self.lam,
                                              random_state=self.random_state, min_features=1)),
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
                              lambda X, c=comp: [col for col in X.columns
                                                 if str(col).startswith(f"{c}__")]))
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
