"""Simulated cohort for ``ovf_prediction_ct`` (seed 003): baseline CT of T11-L2 before an
incident osteoporotic vertebral fracture (OVF), with a larger control pool for matching.

What is simulated
-----------------
Per patient one small axial CT crop in Hounsfield units (``AXIAL_DIRECTION``, 1.0 × 1.0 mm
in-plane, 2.5 mm slices -- seed 003 reconstructed 1.25 mm; thicker slices halve the voxels so
the paper-sized extraction of 1920 VOIs × 15 image types fits the time budget) holding the
vertebral bodies of T11, T12, L1 and L2 stacked
inferior→superior (L2 lowest) with intervertebral discs between them, soft tissue around them,
and CT-like noise. One mask file per patient and reader labels the whole vertebral bodies:
``1..4 = T11..L2`` (:data:`LEVELS`); ``rois.csv`` has one row per level and reader.

Each vertebral body is a rounded box with

- a **cortical shell** (true thickness ~1.2-2.0 mm, blended into the core with partial-volume
  smoothing) whose density and thickness are lower, and whose HU is more irregular, in
  future-fracture patients;
- a **cancellous core** whose mean HU follows the patient's volumetric BMD through the stated
  calibration line ``vBMD [mg/cm³] = HU_TO_BMD_SLOPE × HU + HU_TO_BMD_INTERCEPT`` and whose
  trabecular texture (amplitude and grain of a correlated random field) is more heterogeneous
  and coarser in future-fracture patients.

Clinical covariates follow seed 003's table 1: fracture patients are ~71 years, 61 % female,
BMI 22.4 ± 2.7, vBMD 93 ± 16 mg/cm³; matched controls vBMD 112 ± 20, BMI 23.8 ± 3.8. The
**control pool** (``pool_ratio`` × the fracture group: 3 at smoke size, 4 at paper size) is younger and
less often female than the fracture group, so the 1:2 propensity-score matching on age and sex
that the notebook does (the generator does not pre-match) visibly matters. vBMD also falls with
age and is lower in women (-1.0 mg/cm³ per year, -6 mg/cm³ for women), as in QCT reference
data, so an unmatched comparison is confounded.

``signal`` scales every class effect (vBMD and BMI difference, trabecular heterogeneity,
cortical thinning); ``signal=0`` makes images, vBMD and BMI independent of the outcome given
age and sex. The age/sex difference between the fracture group and the pool is a property of
the sampling, not an imaging effect, and stays at every ``signal`` (matching removes it).
Effects overlap: at paper size the vBMD model lands near AUC 0.75 and radiomics models
around 0.8-0.9, not 1.0.

``cases.csv`` columns: ``patient_id, outcome`` (1 = incident fracture during follow-up),
``group`` (``fracture``/``pool``), ``age, sex`` (``F``/``M``), ``bmi``, ``vbmd`` (mg/cm³, the
patient's QCT-like mean cancellous density over T11-L2 as a scanner would report it).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from vcfnb.synth._phantom import AXIAL_DIRECTION, CohortWriter, perturb_mask, rng_for, \
    smooth_noise, to_image

__all__ = ["generate", "LEVELS", "HU_TO_BMD_SLOPE", "HU_TO_BMD_INTERCEPT", "SIZES",
           "hu_to_bmd", "bmd_to_hu"]

#: vertebral levels and their mask labels
LEVELS = {"T11": 1, "T12": 2, "L1": 3, "L2": 4}
#: the stated HU → BMD calibration line of the simulated scanner (phantomless-QCT-like)
HU_TO_BMD_SLOPE = 0.80  # mg/cm³ per HU
HU_TO_BMD_INTERCEPT = 4.0  # mg/cm³
#: number of incident-fracture patients per size (the pool is ``pool_ratio`` times larger)
SIZES = {"smoke": 20, "paper": 80}
SPACING_XY = 1.0  # mm
SLICE_MM = 2.5  # mm (paper: 1.25 mm; thicker here to keep paper-size extraction fast)

# vertebral body nominal dimensions per level (mm): width (x), depth (y), height (z)
_DIMS = {"T11": (28.0, 22.0, 19.0), "T12": (30.0, 23.0, 20.0),
         "L1": (32.0, 24.0, 21.0), "L2": (33.0, 25.0, 22.0)}
_DISC_MM = 6.0
_MARGIN_MM = 5.0


def hu_to_bmd(hu, slope: float = HU_TO_BMD_SLOPE, intercept: float = HU_TO_BMD_INTERCEPT):
    """Volumetric BMD (mg/cm³) from CT numbers (HU) with a linear calibration line."""
    return slope * np.asarray(hu, float) + intercept


def bmd_to_hu(bmd, slope: float = HU_TO_BMD_SLOPE, intercept: float = HU_TO_BMD_INTERCEPT):
    """Inverse of :func:`hu_to_bmd`."""
    return (np.asarray(bmd, float) - intercept) / slope


def _patients(n_frac: int, n_pool: int, seed: int, signal: float) -> pd.DataFrame:
    """Clinical table with the latent bone-quality variables that drive the images."""
    g = rng_for(seed, "clinical")
    y = np.r_[np.ones(n_frac, int), np.zeros(n_pool, int)]
    n = len(y)
    # sampling differences (kept at every signal): fracture patients older and more often female
    age = np.where(y == 1, g.normal(71.0, 8.6, n), g.normal(67.0, 9.5, n))
    age = np.clip(age, 50.0, 92.0).round(0)
    female = np.where(y == 1, g.uniform(size=n) < 0.61, g.uniform(size=n) < 0.50)
    # class effects, scaled by signal
    bmi = np.where(y == 1, g.normal(23.8 - 1.4 * signal, 3.8 - 1.1 * signal, n),
                   g.normal(23.8, 3.8, n))
    bmi = np.clip(bmi, 15.0, 40.0).round(1)
    vbmd = (112.0 - 1.0 * (age - 70.0) - 6.0 * (female - 0.5) - 18.0 * signal * y
            + g.normal(0.0, 17.0, n))
    vbmd = np.clip(vbmd, 35.0, 220.0)
    trab = g.normal(0.0, 1.0, n) + 0.85 * signal * y  # trabecular heterogeneity (latent, SD units)
    cort = g.normal(0.0, 1.0, n) + 0.75 * signal * y  # cortical thinning/irregularity (latent)
    order = g.permutation(n)  # interleave ids so id order says nothing about the outcome
    ids = np.empty(n, object)
    ids[order] = [f"OVF{i + 1:04d}" for i in range(n)]
    return pd.DataFrame({"patient_id": ids, "outcome": y,
                         "group": np.where(y == 1, "fracture", "pool"), "age": age.astype(int),
                         "sex": np.where(female, "F", "M"), "bmi": bmi, "_vbmd": vbmd,
                         "_trab": trab, "_cort": cort}).iloc[np.argsort(order)].reset_index(drop=True)


def _phantom(p: pd.Series, seed: int, readers: int):
    """CT volume (HU, int16), reader masks (uint8 labels 1..4) and per-level true vBMD."""
    g = rng_for(seed, "case", str(p.patient_id))
    dims = {lv: np.array(_DIMS[lv]) * g.normal(1.0, 0.04, 3) for lv in LEVELS}
    width = max(d[0] for d in dims.values()) + 2 * _MARGIN_MM
    depth = max(d[1] for d in dims.values()) + 2 * _MARGIN_MM
    height = sum(d[2] for d in dims.values()) + 3 * _DISC_MM + 2 * _MARGIN_MM
    shape = (int(np.ceil(height / SLICE_MM)), int(np.ceil(depth / SPACING_XY)),
             int(np.ceil(width / SPACING_XY)))  # (z, y, x)
    sp = np.array([SLICE_MM, SPACING_XY, SPACING_XY])
    yc = (np.arange(shape[1])[:, None] + 0.5) * SPACING_XY
    xc = (np.arange(shape[2])[None, :] + 0.5) * SPACING_XY

    # soft tissue background with a little structure
    hu = 35.0 + 12.0 * smooth_noise(shape, (2.0, 3.0, 3.0), g)
    labels = np.zeros(shape, np.uint8)
    z0 = _MARGIN_MM
    level_vbmd = {}
    # z increases inferior -> superior: L2 is lowest, T11 highest. Each level is drawn in its
    # own slab (body + the disc above it) so generation stays fast.
    for lv in reversed(list(LEVELS)):
        w, d, h = dims[lv]
        k0 = max(int(np.floor((z0 - 1.0) / SLICE_MM)), 0)
        k1 = min(int(np.ceil((z0 + h + _DISC_MM) / SLICE_MM)), shape[0])
        slab = (k1 - k0, shape[1], shape[2])
        zc = (np.arange(k0, k1)[:, None, None] + 0.5) * SLICE_MM
        cz, cy, cx = z0 + h / 2, depth / 2 + g.normal(0, 0.6), width / 2 + g.normal(0, 0.6)
        r = (np.abs((zc - cz) / (h / 2)) ** 6 + np.abs((yc - cy) / (d / 2)) ** 3.5
             + np.abs((xc - cx) / (w / 2)) ** 3.5)
        body = r <= 1.0
        # depth below the body surface in mm (anisotropic distance transform)
        dep = ndimage.distance_transform_edt(body, sampling=sp)
        # cancellous density: patient vBMD, a small level gradient (thoracic a little denser)
        lvl_bmd = p._vbmd + {"T11": 4.0, "T12": 2.0, "L1": 0.0, "L2": -2.0}[lv] + g.normal(0, 4.0)
        level_vbmd[lv] = lvl_bmd
        canc_hu = float(bmd_to_hu(lvl_bmd))
        # trabecular texture: amplitude and grain grow with heterogeneity
        amp = 32.0 * np.exp(0.18 * p._trab)
        grain = float(np.clip(0.85 + 0.14 * p._trab, 0.5, 1.4))
        tex = smooth_noise(slab, (grain * SPACING_XY / SLICE_MM, grain, grain), g)
        patchy = smooth_noise(slab, (2.0, 3.0, 3.0), g)
        canc = canc_hu + amp * tex + 0.35 * amp * np.exp(0.2 * p._trab) * patchy
        # cortical shell: thinner, less dense, more irregular with latent cortical loss
        thick = float(np.clip(1.7 - 0.18 * p._cort + g.normal(0, 0.05), 0.9, 2.6))
        cort_hu = 560.0 - 55.0 * p._cort + 0.8 * (canc_hu - 135.0)
        irregular = 1.0 + 0.27 * np.exp(0.25 * p._cort) * smooth_noise(slab, (1.0, 1.5, 1.5), g)
        shell_w = 1.0 / (1.0 + np.exp(-(thick - dep) / 0.35))  # partial-volume blend
        vert = canc + shell_w * (cort_hu * irregular - canc)
        # soft edge of the body into the surrounding tissue, then the disc above the body
        edge = ndimage.gaussian_filter(body.astype(float), sigma=(0.4, 0.5, 0.5))
        sub = hu[k0:k1]
        sub = np.where(body, vert, sub * (1 - edge) + edge * cort_hu * 0.6)
        if lv != "T11":
            disc = ((zc > z0 + h) & (zc < z0 + h + _DISC_MM)
                    & ((np.abs((yc - cy) / (d / 2)) ** 2 + np.abs((xc - cx) / (w / 2)) ** 2) <= 1))
            sub = np.where(disc & ~body, 85.0 + 8.0 * smooth_noise(slab, 2.0, g), sub)
        hu[k0:k1] = sub
        labels[k0:k1][body] = LEVELS[lv]
        z0 += h + _DISC_MM
    # scanner: slight blur (reconstruction kernel) and correlated quantum noise
    hu = ndimage.gaussian_filter(hu, sigma=(0.4, 0.6, 0.6))
    hu = hu + 18.0 * smooth_noise(shape, (0.4, 0.7, 0.7), g)
    img = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    masks = [labels]
    for k in range(1, readers):
        gr = rng_for(seed, "reader", k, str(p.patient_id))
        other = np.zeros_like(labels)
        for _lv, lab in LEVELS.items():
            one = labels == lab
            zs = np.flatnonzero(one.any(axis=(1, 2)))
            a, b = max(zs[0] - 3, 0), min(zs[-1] + 4, shape[0])
            moved = perturb_mask(one[a:b], gr, jitter=0.3, sigma=1.5)
            other[a:b][moved & (other[a:b] == 0)] = lab
        masks.append(other)
    return img, masks, level_vbmd


def generate(out, *, size: str = "paper", seed: int = 0, signal: float = 1.0,
             request: dict | None = None, n_fractures: int | None = None,
             pool_ratio: float | None = None, readers: int = 2, n_jobs: int | None = None) -> Path:
    """Write the simulated OVF cohort (fracture patients + control pool) into ``out``.

    Parameters
    ----------
    out : path
        Cohort folder.
    size : {"smoke", "paper"}
        ``paper``: 80 fracture patients (seed 003); ``smoke``: 20.
    seed : int
        Master seed (same seed → identical files).
    signal : float
        Scale of every class effect (0 = none).
    request : dict, optional
        The request recorded in ``cohort.json`` (filled by :func:`vcfnb.synth.make_cohort`).
    n_fractures : int, optional
        Override the number of fracture patients.
    pool_ratio : float, optional
        Control pool size as a multiple of the fracture group (>= 3; default 3 for smoke,
        4 for paper).
    readers : int
        Number of readers' masks (reader 2 = smooth boundary perturbation of reader 1).
    n_jobs : int, optional
        Worker processes for drawing the phantoms (default: up to 2). Files do not depend on it.

    Returns
    -------
    Path
        The cohort folder.

    Examples
    --------
    >>> import tempfile, vcfnb as vc
    >>> d = vc.synth.make_cohort("ovf", tempfile.mkdtemp(), size="smoke")  # doctest: +SKIP
    >>> vc.io.load_cohort(d).cases.group.value_counts().to_dict()  # doctest: +SKIP
    {'pool': 80, 'fracture': 20}
    """
    if pool_ratio is None:
        pool_ratio = 3.0 if size == "smoke" else 4.0
    if pool_ratio < 3:
        raise ValueError(f"pool_ratio must be >= 3 (the pool must allow 1:2 matching), got {pool_ratio}")
    n_frac = int(n_fractures or SIZES[size])
    n_pool = int(round(pool_ratio * n_frac))
    request = request or {"study": "ovf", "size": size, "seed": seed, "signal": signal,
                          "options": {}}
    w = CohortWriter(Path(out), "ovf", request)
    pts = _patients(n_frac, n_pool, seed, signal)
    if n_jobs is None:  # worker start-up costs more than it saves on small cohorts
        n_jobs = min(2, os.cpu_count() or 1) if len(pts) >= 60 else 1
    rows = [p for _, p in pts.iterrows()]
    from vcfnb.parallel import pmap

    drawn = pmap(lambda p: _phantom(p, seed, readers), rows, n_jobs=n_jobs)
    for p, (img, masks, level_vbmd) in zip(rows, drawn):
        sp = (SPACING_XY, SPACING_XY, SLICE_MM)
        origin = (-img.shape[2] * SPACING_XY / 2, -img.shape[1] * SPACING_XY / 2, 0.0)
        rel_img = w.image(to_image(img, sp, origin, AXIAL_DIRECTION), f"images/{p.patient_id}_ct.nii.gz")
        rel_masks = []
        for k, m in enumerate(masks, start=1):
            rel_masks.append(w.image(to_image(m, sp, origin, AXIAL_DIRECTION),
                                     f"masks/{p.patient_id}_vertebrae_r{k}.nii.gz"))
        # QCT-like read-out the scanner would report: mean of the four levels + measurement error
        gq = rng_for(seed, "qct", str(p.patient_id))
        vbmd = float(np.mean(list(level_vbmd.values())) + gq.normal(0.0, 2.0))
        w.cases.append({"patient_id": p.patient_id, "outcome": int(p.outcome), "group": p.group,
                        "age": int(p.age), "sex": p.sex, "bmi": float(p.bmi),
                        "vbmd": round(vbmd, 1)})
        for k, rel_m in enumerate(rel_masks, start=1):
            for lv, lab in LEVELS.items():
                w.rois.append({"patient_id": p.patient_id, "roi": lv, "sequence": "CT",
                               "reader": str(k), "image": rel_img, "mask": rel_m, "label": lab})
    return w.finish({"levels": LEVELS, "hu_to_bmd": {"slope": HU_TO_BMD_SLOPE,
                                                     "intercept": HU_TO_BMD_INTERCEPT},
                     "n_fracture": n_frac, "n_pool": n_pool,
                     "spacing_mm": [SPACING_XY, SPACING_XY, SLICE_MM]})
