"""Simulated cohort for ``vcf_benign_malignant`` (seeds 000 and 001): benign vs malignant VCF.

Each patient has one sagittal T2-like MR volume of a short thoracolumbar segment (three vertebral
bodies with their discs, spinal canal and posterior elements, array order ``(slices, SI, AP)``
with :data:`~vcfnb.synth._phantom.SAGITTAL_DIRECTION`) in which the middle vertebra is fractured
(height loss: anterior/middle/posterior height ratios, as in
:func:`~vcfnb.synth._phantom.wedge_body`). The ROI is the whole fractured
vertebral body (``roi = "fractured_body"``, label 1), outlined by reader 1 for everybody and by
reader 2 for every arm-A patient and a random subset of arm B (the papers' reliability subsets).

Two arms share one cohort folder (column ``arm`` of ``cases.csv``):

* ``A`` — seed 000: 100 patients (51 malignant / 49 benign), fast-spin-echo T2WI (fat bright),
  3.5 mm sagittal slices.
* ``B`` — seed 001: 234 patients (85 malignant / 149 benign, the counts implied by its tables 2-5),
  T2 Dixon water image (fat dark), 3 mm slices.

Outcome ``outcome`` = 1 malignant, 0 benign (benign osteoporotic). Clinical covariates: ``age``,
``sex`` (M/F), ``location`` (cervical/thoracic/lumbar), ``level`` (e.g. ``L1``), ``tumour_type``
(metastasis/myeloma/lymphoma for malignant fractures, ``none`` for benign), and the five MRI
semantic features of seed 001 (0/1): ``wedge_deformity`` (anterior wedge deformity),
``band_edema`` (band-pattern edema), ``paravertebral_mass``, ``diffuse_signal`` (diffuse signal
change) and ``posterior_involvement`` (pedicle/posterior element involvement). Their
class-conditional prevalences (:data:`SEMANTIC_PREVALENCE`) reproduce the overall prevalences of
seed 001's table 1 and the directions of its multivariable odds ratios (band edema and wedge
deformity favour benign, a paravertebral mass malignant).

The semantic features *are* what the images show: a wedge-deformity patient's fractured body
has a low anterior/posterior height ratio (so morphometry can re-derive it), band edema is a
hyperintense band under the collapsed endplates, a diffuse signal change raises the whole body's
signal, a paravertebral mass is a soft-tissue mass in front of the body, and posterior-element
involvement raises the signal of the pedicles and arch. On top of that, malignant fractures have
(on average) larger, brighter and more heterogeneous marrow lesions with coarser texture, a
convex posterior wall and slightly more collapse (:data:`EFFECTS`). Every class difference is
multiplied by ``signal``: with ``signal=0`` images, semantic features and covariates are drawn
from one distribution whatever the label (tumour type alone stays defined by the label, as it
only exists for malignant fractures). Scanner gain, a smooth bias field (so N4 matters) and
Rician noise vary per patient independently of the label.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from vcfnb.synth._phantom import (SAGITTAL_DIRECTION, CohortWriter, perturb_mask, rng_for,
                                  rounded_box, smooth_noise, to_image)

__all__ = ["generate", "ARMS", "SIZES", "SEMANTIC", "SEMANTIC_PREVALENCE", "EFFECTS",
           "simulate_patient"]

#: (malignant, benign) patients per arm and size; reader-2 subset size (None = every patient)
SIZES = {
    "paper": {"A": (51, 49, None), "B": (85, 149, 100)},
    "smoke": {"A": (20, 20, None), "B": (16, 24, 20)},
}

#: acquisition per arm: voxel spacing (AP, SI, LR) mm, array shape (slices, SI, AP), contrast
ARMS = {
    "A": {"spacing": (1.25, 1.25, 3.5), "shape": (15, 84, 72), "contrast": "T2_FSE",
          "paper": "seed 000 (T2WI, 1.5 T)"},
    "B": {"spacing": (1.1, 1.1, 3.0), "shape": (17, 92, 80), "contrast": "T2_Dixon_water",
          "paper": "seed 001 (T2 Dixon water, 3 T)"},
}

SEMANTIC = ["wedge_deformity", "band_edema", "paravertebral_mass", "diffuse_signal",
            "posterior_involvement"]

#: P(feature present) as (benign, malignant); the mixture over seed 001's 149 benign / 85
#: malignant reproduces its table 1 (54.7 %, 28.6 %, 5.1 %, 67.5 %, 49.1 %)
SEMANTIC_PREVALENCE = {
    "wedge_deformity": (0.68, 0.32),
    "band_edema": (0.40, 0.09),
    "paravertebral_mass": (0.01, 0.125),
    "diffuse_signal": (0.60, 0.80),
    "posterior_involvement": (0.44, 0.58),
}

#: clinical covariates as (benign, malignant) per arm (seed 000 table 1; seed 001 table 1 with
#: the class split chosen so age, sex and location differ as its univariate analysis reports)
CLINICAL = {
    "A": {"age": ((70.9, 7.0), (69.4, 10.0)), "male": (0.388, 0.608),
          "location": ((0.0, 0.469, 0.531), (0.059, 0.392, 0.549))},
    "B": {"age": ((66.0, 12.0), (59.0, 13.0)), "male": (0.36, 0.60),
          "location": ((0.008, 0.30, 0.692), (0.08, 0.45, 0.47))},
}
LOCATIONS = ("cervical", "thoracic", "lumbar")
LEVELS = {"cervical": ("C5", "C6", "C7"),
          "thoracic": ("T6", "T7", "T8", "T9", "T10", "T11", "T12"),
          "lumbar": ("L1", "L2", "L3", "L4", "L5")}
TUMOUR_TYPES = (("metastasis", 0.843), ("myeloma", 0.0785), ("lymphoma", 0.0785))

#: continuous image latents: (mean, SD, malignant-minus-benign shift at signal=1); the shift is
#: applied as mean + signal * shift * (y - 0.5), so at signal 0 both classes share one law
EFFECTS = {
    "lesion_extent_logit": (-0.4, 1.0, 0.55),  # fraction of the body replaced by lesion
    "lesion_contrast": (0.9, 0.35, 0.2),       # lesion brightness (x marrow signal)
    "lesion_blob_mm": (3.0, 0.9, 0.55),        # correlation length of the lesion pattern
    "heterogeneity": (0.25, 0.10, 0.055),      # intra-lesion signal variation
    "texture_mm": (1.2, 0.35, 0.2),            # marrow texture correlation length
    "posterior_bulge_mm": (1.2, 1.0, 0.75),    # convex posterior wall
    "height_ratio": (0.76, 0.08, -0.04),       # mean remaining body height (collapse)
}


def _latent(rng: np.random.Generator, name: str, y: int, signal: float) -> float:
    mean, sd, shift = EFFECTS[name]
    return float(mean + signal * shift * (y - 0.5) + sd * rng.standard_normal())


def _prevalence(p: tuple[float, float], y: int, signal: float, weight_malignant: float) -> float:
    """Class-conditional probability shrunk towards the mixture by ``signal`` (clipped to
    [0, 1] when ``signal > 1`` exaggerates it)."""
    mix = (1 - weight_malignant) * p[0] + weight_malignant * p[1]
    return float(np.clip(mix + signal * (p[y] - mix), 0.0, 1.0))


def _clinical(rng: np.random.Generator, arm: str, y: int, signal: float, w: float) -> dict:
    spec = CLINICAL[arm]
    (mb, sb), (mm, sm) = spec["age"]
    mix_mean = (1 - w) * mb + w * mm
    mean = mix_mean + signal * ((mm if y else mb) - mix_mean)
    sd = (sb + sm) / 2 + signal * ((sm if y else sb) - (sb + sm) / 2)
    age = int(np.clip(round(mean + sd * rng.standard_normal()), 35, 92))
    male = rng.random() < _prevalence(spec["male"], y, signal, w)
    loc_p = np.array([_prevalence((spec["location"][0][i], spec["location"][1][i]), y, signal, w)
                      for i in range(3)])
    location = LOCATIONS[int(rng.choice(3, p=loc_p / loc_p.sum()))]
    level = str(rng.choice(LEVELS[location]))
    if y == 1:
        names, probs = zip(*TUMOUR_TYPES)
        tumour = str(rng.choice(names, p=np.array(probs) / sum(probs)))
    else:
        tumour = "none"
    sem = {k: int(rng.random() < _prevalence(p, y, signal, w))
           for k, p in SEMANTIC_PREVALENCE.items()}
    return {"age": age, "sex": "M" if male else "F", "location": location, "level": level,
            "tumour_type": tumour, **sem}


def _height_ratios(rng: np.random.Generator, wedge: int, mean_ratio: float) -> tuple:
    """(anterior, middle, posterior) height ratios of the fractured body."""
    r = float(np.clip(mean_ratio, 0.45, 0.95))
    if wedge:
        post = float(np.clip(r + rng.uniform(0.10, 0.20), 0.7, 1.0))
        ant = float(np.clip(post * rng.uniform(0.58, 0.80), 0.35, 0.9))
        mid = (ant + post) / 2 + rng.uniform(-0.03, 0.03)
    else:
        post = float(np.clip(r + rng.uniform(-0.03, 0.05), 0.45, 1.0))
        ant = float(np.clip(post * rng.uniform(0.86, 1.06), 0.4, 1.0))
        mid = min(ant, post) - rng.uniform(0.0, 0.12)  # biconcave / uniform collapse
    return ant, float(np.clip(mid, 0.3, 1.0)), post


def _vertebral_body(shape: tuple[int, int, int], centre: tuple[float, float, float],
                    half: tuple[float, float, float], ratios: tuple[float, float, float] = (1, 1, 1),
                    power: float = 6.0) -> np.ndarray:
    """Vertebral body: elliptic axial cross-section (LR x AP), flat rounded endplates.

    Like :func:`~vcfnb.synth._phantom.wedge_body` (the SI half-height at the anterior edge,
    middle and posterior edge is ``half[1]`` times ``ratios`` = (anterior, middle, posterior),
    quadratic along AP) but the cross-section is an ellipse, so the sagittal ROI area peaks at
    the mid-sagittal slice as in real vertebrae (a box would give a flat area profile and an
    arbitrary "largest-area slice"). Axes: 0 = LR, 1 = SI, 2 = AP.
    """
    g0, g1, g2 = np.ogrid[tuple(slice(0, s) for s in shape)]
    w = (g0 - centre[0]) / half[0]
    u = (g2 - centre[2]) / half[2]
    a, m, p = ratios
    ratio = np.clip(m + (p - a) / 2.0 * u + (a + p - 2 * m) / 2.0 * u ** 2, 0.05, 1.5)
    v = (g1 - centre[1]) / (half[1] * ratio)
    radial = np.sqrt(w ** 2 + u ** 2)
    return radial ** power + np.abs(v) ** power <= 1.0


def _local(mask: np.ndarray, margin: int = 3) -> tuple[slice, ...]:
    """Bounding box of ``mask`` plus ``margin`` voxels (array slices, clipped)."""
    out = []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != ax)))
        lo, hi = (0, mask.shape[ax]) if idx.size == 0 else (idx[0], idx[-1] + 1)
        out.append(slice(max(int(lo) - margin, 0), min(int(hi) + margin, mask.shape[ax])))
    return tuple(out)


def _noise_in(mask: np.ndarray, sigma, rng: np.random.Generator) -> np.ndarray:
    """Smooth unit noise computed only around ``mask`` (zeros elsewhere): cheap and local."""
    box = _local(mask, margin=4)
    out = np.zeros(mask.shape)
    out[box] = smooth_noise(tuple(s.stop - s.start for s in box), sigma, rng)
    return out


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field: a coarse random grid interpolated to ``shape``."""
    coarse = rng.standard_normal((3, 4, 4))
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=3,
                         mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1], : shape[2]]
    field = (field - field.mean()) / (field.std() or 1.0)
    return strength * field


def _reader_mask(body: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """One reader's outline of ``body`` (:func:`perturb_mask` on the body's neighbourhood)."""
    box = _local(body, margin=4)
    out = np.zeros(body.shape, bool)
    out[box] = perturb_mask(body[box], rng, jitter=jitter, sigma=1.5)
    return out


def simulate_patient(rng: np.random.Generator, arm: str, y: int, signal: float,
                     clinical: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One patient's image and true fractured-body mask (arrays ``(slices, SI, AP)``).

    Returns ``(image int16, mask bool, truth dict)``; the truth dict holds the latent values
    (height ratios etc.) and is not written to ``cases.csv``.
    """
    spec = ARMS[arm]
    sx, sy, sz = spec["spacing"]  # AP, SI, LR (mm)
    nz, ny, nx = spec["shape"]
    shape = (nz, ny, nx)
    size_scale = {"cervical": 0.8, "thoracic": 0.92, "lumbar": 1.0}[clinical["location"]]
    scale = size_scale * rng.uniform(0.94, 1.06)

    # ---- geometry (array axes: 0 = LR slices, 1 = SI rows, 2 = AP columns; AP col 0 anterior)
    body_h = 24.0 * scale / sy          # nominal body height (voxels)
    disc_h = 8.0 * scale / sy
    body_ap = 34.0 * scale / sx         # body depth
    body_lr = rng.uniform(42.0, 48.0) / sz  # body width (slices): >= 12 slices
    ant_edge = 14.0 / sx + rng.uniform(-1, 1)
    c_ap = ant_edge + body_ap / 2
    c_lr = (nz - 1) / 2 + rng.uniform(-0.6, 0.6)
    c_si_mid = (ny - 1) / 2 + rng.uniform(-2, 2)
    centres_si = [c_si_mid - (body_h + disc_h), c_si_mid, c_si_mid + (body_h + disc_h)]
    half = (body_lr / 2, body_h / 2, body_ap / 2)

    wedge = clinical["wedge_deformity"]
    mean_ratio = _latent(rng, "height_ratio", y, signal)
    ant, mid, post = _height_ratios(rng, wedge, mean_ratio)

    bodies = [_vertebral_body(shape, (c_lr, c, c_ap), half,
                              (ant, mid, post) if i == 1 else (1.0, 1.0, 1.0))
              for i, c in enumerate(centres_si)]
    fractured = bodies[1].copy()
    bulge_mm = max(_latent(rng, "posterior_bulge_mm", y, signal), 0.0)
    if bulge_mm > 0.3:  # convex posterior wall: a lens behind the middle of the body
        lens_half = (half[0] * 0.7, half[1] * mid * 0.55, bulge_mm / sx)
        lens = rounded_box(shape, (c_lr, c_si_mid, ant_edge + body_ap), lens_half, power=2.0)
        fractured |= lens & (np.arange(nx)[None, None, :] >= ant_edge + body_ap * 0.8)
    bodies[1] = fractured

    # discs fill the gaps between consecutive bodies inside the column footprint (a collapsed
    # endplate leaves a taller disc space, as when the disc bulges into the fracture)
    column = rounded_box(shape, (c_lr, (ny - 1) / 2, c_ap), (half[0] * 0.95, ny, half[2] * 0.97),
                         power=4.0)
    any_body = bodies[0] | bodies[1] | bodies[2]
    rows = np.arange(ny)[None, :, None]
    discs = np.zeros(shape, bool)
    for upper, lower in ((0, 1), (1, 2)):
        lo = centres_si[upper] + half[1] * 0.75
        hi = centres_si[lower] - half[1] * 0.75
        discs |= column & (rows > lo) & (rows < hi)
    discs &= ~any_body
    nucleus = discs & rounded_box(shape, (c_lr, (ny - 1) / 2, c_ap),
                                  (half[0] * 0.6, ny, half[2] * 0.55), power=2.0)
    post_edge = ant_edge + body_ap
    canal_ap = 15.0 / sx
    canal = rounded_box(shape, (c_lr, (ny - 1) / 2, post_edge + canal_ap / 2 + 0.5),
                        (10.0 / sz, ny, canal_ap / 2), power=4.0) & ~any_body
    arch = np.zeros(shape, bool)
    pedicles = np.zeros(shape, bool)
    for _i, c in enumerate(centres_si):
        h = body_h * 0.35
        # lamina and spinous process behind the canal (midline and paramedian slices)
        arch |= rounded_box(shape, (c_lr, c + 2.0, post_edge + canal_ap + 12.0 / sx),
                            (9.0 / sz, h, 11.0 / sx), power=2.5)
        # pedicles: lateral slices, joining body to arch beside the canal
        for side in (-1, 1):
            ped = rounded_box(shape, (c_lr + side * 13.0 / sz, c - body_h * 0.1,
                                      post_edge + canal_ap / 2 + 1),
                              (4.0 / sz, h * 0.8, canal_ap / 2 + 3), power=2.5)
            pedicles |= ped
    pedicles &= ~any_body & ~canal
    arch &= ~any_body & ~canal
    fractured_post = (pedicles | arch) & (np.abs(rows - c_si_mid) < body_h * 0.75)

    # ---- intensities (before gain, bias field and noise)
    dixon = spec["contrast"] == "T2_Dixon_water"
    marrow0 = 120.0 if dixon else 260.0
    tissue = np.full(shape, 115.0 if dixon else 140.0)
    fat = smooth_noise(shape, (0.6, 2.5, 2.5), rng) > (1.0 if dixon else 1.4)  # fat lobules (suppressed on water image)
    tissue[fat] = 55.0 if dixon else 330.0
    tissue *= 1 + 0.06 * smooth_noise(shape, (1, 3, 3), rng)
    img = tissue
    img[canal] = 650.0 * (1 + 0.03 * rng.standard_normal())
    tex_sigma = max(_latent(rng, "texture_mm", y, signal), 0.4)
    marrow_tex = _noise_in(bodies[0] | bodies[1] | bodies[2] | pedicles | arch,
                           (tex_sigma / sz, tex_sigma / sy, tex_sigma / sx), rng)
    marrow = marrow0 * (1 + 0.12 * marrow_tex)
    bone = any_body | pedicles | arch
    img[bone] = marrow[bone]
    img[discs] = 190.0 if dixon else 170.0
    img[nucleus] = 430.0 if dixon else 380.0
    # cortical rim / endplates: 1-voxel in-plane erosion difference, dark
    rim = np.zeros(shape, bool)
    for b in bodies:
        er = ndimage.binary_erosion(b, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]],
                                                          bool))
        rim |= b & ~er
    img[rim] = 0.45 * marrow0

    # ---- fracture-related marrow signal inside the fractured body
    body = bodies[1]
    extent = 1 / (1 + np.exp(-_latent(rng, "lesion_extent_logit", y, signal)))
    contrast = max(_latent(rng, "lesion_contrast", y, signal), 0.1)
    blob_mm = max(_latent(rng, "lesion_blob_mm", y, signal), 1.0)
    hetero = max(_latent(rng, "heterogeneity", y, signal), 0.02)
    field = _noise_in(body, (blob_mm / sz, blob_mm / sy, blob_mm / sx), rng)
    thr = np.quantile(field[body], 1 - extent) if body.any() else 0.0
    focal = 1 / (1 + np.exp(-(field - thr) * 4.0))
    lesion = focal * contrast * (1 + hetero * _noise_in(body, 1.0, rng))
    if clinical["band_edema"]:
        # band under the collapsed superior endplate (and a thinner one above the inferior)
        top_row = np.argmax(body, axis=1)  # first body row per (slice, col)
        dist = rows - top_row[:, None, :]
        width = rng.uniform(4.0, 8.0) / sy
        band = np.exp(-np.clip(dist, 0, None) / width) * rng.uniform(0.6, 1.0)
        lesion = lesion + band * 0.9
    if clinical["diffuse_signal"]:
        lesion = lesion + rng.uniform(0.35, 0.7) * (1 + 0.1 * _noise_in(body, 2.0, rng))
    img[body] = marrow[body] * (1 + lesion[body])
    img[rim & body] = 0.45 * marrow0 * (1 + 0.3 * lesion[rim & body])
    if clinical["posterior_involvement"]:
        amp = rng.uniform(0.6, 1.2)
        img[fractured_post] = marrow[fractured_post] * (
            1 + amp * (1 + 0.2 * _noise_in(fractured_post, 1.5, rng)[fractured_post]))
    if clinical["paravertebral_mass"]:
        r = rng.uniform(7.0, 12.0)
        side = rng.choice([-1, 1])
        mass = rounded_box(shape, (c_lr + side * rng.uniform(0, 8) / sz, c_si_mid,
                                   ant_edge - r / sx * 0.45), (r / sz, r * 1.3 / sy, r / sx),
                           power=2.0) & ~body
        img[mass] = (380.0 if dixon else 320.0) * (1 + 0.15 * _noise_in(mass, 1.5, rng)[mass])

    # ---- scanner: gain, bias field, Rician noise
    gain = float(np.exp(0.18 * rng.standard_normal()))
    bias = np.exp(_bias_field(shape, rng, 0.12)
                  + 0.15 * np.linspace(-1, 1, nx)[None, None, :])
    sigma = 9.0 if dixon else 12.0
    signal_img = img * gain * bias
    noisy = np.sqrt((signal_img + sigma * rng.standard_normal(shape)) ** 2
                    + (sigma * rng.standard_normal(shape)) ** 2)
    image = np.clip(np.round(noisy), 0, 32767).astype(np.int16)
    truth = {"anterior_ratio": ant, "middle_ratio": mid, "posterior_ratio": post,
             "lesion_extent": float(extent), "posterior_bulge_mm": bulge_mm}
    return image, body, truth


def generate(out, *, size: str = "paper", seed: int = 0, signal: float = 1.0,
             request: dict | None = None, arms: tuple[str, ...] = ("A", "B"),
             reader_jitter: float = 0.3) -> Path:
    """Write the simulated VCF cohort (both arms) into ``out``.

    Parameters
    ----------
    out : path
        Cohort folder.
    size : {"paper", "smoke"}
        ``paper``: arm A 51/49 and arm B 85/149 malignant/benign, reader 2 on all of A and 100
        of B; ``smoke``: 20/20 and 16/24, reader 2 on all of A and 20 of B.
    seed : int
        Master seed (each patient has its own stream, so files are reproducible one by one).
    signal : float
        Scale of every class effect (0 = none).
    request : dict, optional
        The :func:`vcfnb.synth.make_cohort` request stored in ``cohort.json``.
    arms : tuple of str
        Which arms to generate.
    reader_jitter : float
        Mean boundary displacement (voxels) of each reader's outline from the true body.

    Returns
    -------
    Path
        The cohort folder.

    Examples
    --------
    >>> import tempfile, vcfnb as vc
    >>> d = vc.synth.make_cohort("vcf", tempfile.mkdtemp(), size="smoke")  # doctest: +SKIP
    >>> vc.io.load_cohort(d).cases.groupby("arm").outcome.mean()  # doctest: +SKIP
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    request = request or {"study": "vcf", "size": size, "seed": seed, "signal": signal,
                          "options": {}}
    writer = CohortWriter(Path(out), "vcf", request)
    for arm in arms:
        n_mal, n_ben, n_r2 = SIZES[size][arm]
        n = n_mal + n_ben
        w = n_mal / n
        order_rng = rng_for(seed, "vcf", arm, "labels")
        labels = np.r_[np.ones(n_mal, int), np.zeros(n_ben, int)]
        labels = labels[order_rng.permutation(n)]
        r2 = set(range(n)) if n_r2 is None else set(
            order_rng.choice(n, size=min(n_r2, n), replace=False).tolist())
        spec = ARMS[arm]
        spacing = spec["spacing"]
        nz, ny, nx = spec["shape"]
        origin = (nz * spacing[2] / 2, -10.0, ny * spacing[1] / 2)
        for i, y in enumerate(labels):
            pid = f"{arm}{i + 1:03d}"
            rng = rng_for(seed, "vcf", pid)
            clinical = _clinical(rng, arm, int(y), signal, w)
            image, body, _truth = simulate_patient(rng, arm, int(y), signal, clinical)
            writer.cases.append({"patient_id": pid, "outcome": int(y), "arm": arm,
                                 "sequence": spec["contrast"], **clinical})
            img_rel = writer.image(to_image(image, spacing, origin, SAGITTAL_DIRECTION),
                                   f"images/{pid}_T2.nii.gz")
            readers = ["1", "2"] if i in r2 else ["1"]
            for reader in readers:
                m = _reader_mask(body, rng_for(seed, "vcf", pid, "reader", reader),
                                 reader_jitter)
                rel = writer.image(to_image(m.astype(np.uint8), spacing, origin,
                                            SAGITTAL_DIRECTION),
                                   f"masks/{pid}_fractured_body_r{reader}.nii.gz")
                writer.rois.append({"patient_id": pid, "roi": "fractured_body",
                                    "sequence": "T2", "reader": reader, "image": img_rel,
                                    "mask": rel, "label": 1})
    return writer.finish({"arms": {a: ARMS[a]["paper"] for a in arms},
                          "outcome": "1 = malignant, 0 = benign (osteoporotic)"})
