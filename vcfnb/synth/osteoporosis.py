"""Simulated cohort for seed 002: abnormal bone mass (DXA) from lumbar sagittal T1WI and T2WI.

Each patient has DXA results (lumbar T-score and Z-score) from which the outcome is derived by
the paper's rule (:func:`vcfnb.studies.osteoporosis.dxa_rule`: T < -1 for patients aged >= 50,
Z < -2 for younger ones), clinical covariates drawn like seed 002's tables 1 and 4 (age, sex,
height, weight; BMI = weight / height^2) and two sagittal MRI slabs of L1-L4 (T1WI, T2WI) on one
grid, with array axes ``(sagittal slice, superior->inferior, anterior->posterior)`` and
:data:`~vcfnb.synth._phantom.SAGITTAL_DIRECTION`.

Image model (what drives the class effect):

* **marrow fat fraction** ``ff`` per vertebra rises with the bone deficit ``-(T + 1)`` (and
  slightly with age): fat shortens T1, so the marrow gets brighter on T1WI, and fatty marrow is
  also brighter on fast-spin-echo T2WI (seed 002's discussion);
* **trabecular rarefaction**: with the deficit the cancellous texture becomes coarser, with more
  and larger fatty "islands" and a stronger fine-scale trabecular pattern;
* body size follows the patient's height (shape features differ between classes only through
  the covariates, as in the paper's table 1).

Every class effect (covariate differences, the fat-fraction and texture links) is multiplied by
``signal``; with ``signal=0`` the images and covariates are drawn identically for both classes
and only the DXA scores (which *define* the outcome) differ.

ROIs: the vertebral bodies L1-L4 (labels 1-4) with the cortex excluded (one-voxel in-plane
erosion), on the mid-sagittal slice and its two neighbours; reader 1 outlines the body, reader 2
is the same outline with a smooth random boundary shift per slice
(:func:`~vcfnb.synth._phantom.perturb_mask`), separately on T1WI and T2WI.

External cohort (``split = "external"``, ``center = "B"``): another scanner -- different
intensity scaling and offset per sequence, a changed tissue contrast (a power-law intensity
response, which per-image intensity normalisation cannot undo), about twice the noise and a smooth
multiplicative bias field -- with the covariates of seed 002's table 4.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from vcfnb.synth._phantom import (SAGITTAL_DIRECTION, CohortWriter, perturb_mask, rng_for,
                                  rounded_box, smooth_noise, to_image)

#: (abnormal, normal) counts: internal cohort, external cohort
SIZES = {"paper": ((86, 74), (17, 18)), "smoke": ((22, 18), (8, 8))}
SHAPE = (9, 120, 56)  # sagittal slices, superior->inferior rows, anterior->posterior columns
SPACING = (1.3, 1.3, 4.0)  # (AP, SI, slice) mm, SimpleITK order
LEVELS = ("L1", "L2", "L3", "L4")
AGE_CUTOFF = 50.0  # DXA reference: T-score from this age on, Z-score below it

# seed 002 table 1 (training + validation pooled) and table 4 (external):
# mean, SD of age / height / weight and the share of men, per class (normal, abnormal)
COVARIATES = {
    "internal": {"age": ((60.5, 11.5), (67.9, 9.5)), "height_cm": ((162.0, 6.9), (157.2, 5.5)),
                 "weight_kg": ((63.2, 10.7), (55.5, 7.1)), "male": (19 / 74, 5 / 86)},
    "external": {"age": ((55.3, 13.9), (67.1, 9.3)), "height_cm": ((161.0, 5.6), (159.2, 6.7)),
                 "weight_kg": ((62.3, 8.4), (59.6, 6.6)), "male": (3 / 18, 3 / 17)},
}

# tissue intensities (arbitrary MR units) per sequence; marrow = a + b * fat fraction
TISSUE = {
    "T1": {"marrow": (250.0, 700.0), "cortex": 90.0, "disc": 320.0, "csf": 150.0,
           "soft": 360.0, "noise": 14.0},
    "T2": {"marrow": (200.0, 420.0), "cortex": 70.0, "disc": 600.0, "csf": 820.0,
           "soft": 230.0, "noise": 12.0},
}
# scanner shift of the external centre: (gain, offset, contrast exponent, noise factor,
# bias-field strength); the exponent changes tissue contrast, which intensity normalisation
# (pyradiomics' normalize) cannot undo
SCANNER_B = {"T1": (2.6, 40.0, 0.82, 1.8, 0.15), "T2": (0.35, -10.0, 1.18, 1.8, 0.15)}


def _mix(pair: tuple, abnormal: bool, signal: float, weights: tuple[float, float]):
    """Class value shrunk towards the pooled value: pooled + signal * (class - pooled)."""
    pooled = weights[0] * np.asarray(pair[0]) + weights[1] * np.asarray(pair[1])
    own = np.asarray(pair[1] if abnormal else pair[0])
    return pooled + signal * (own - pooled)


def _dxa(rng: np.random.Generator, abnormal: bool, age: float) -> tuple[float, float]:
    """T- and Z-score consistent with the class under the paper's rule."""
    age_term = 0.03 * (age - 35.0)  # Z is age-matched: older patients' Z lies above their T
    if age >= AGE_CUTOFF:
        t = -1.0 - rng.gamma(2.0, 0.55) if abnormal else -1.0 + rng.gamma(2.0, 0.5)
        z = t + age_term + rng.normal(0, 0.15)
    else:
        z = -2.0 - rng.gamma(1.5, 0.4) if abnormal else -2.0 + rng.gamma(4.0, 0.5)
        t = z - age_term - rng.normal(0, 0.15)
    t, z = round(float(t), 2), round(float(z), 2)
    if abnormal:  # a gamma draw below 0.005 would round onto the cut-off (normal by the rule)
        if age >= AGE_CUTOFF:
            t = min(t, -1.01)
        else:
            z = min(z, -2.01)
    return t, z


def _covariates(rng, abnormal: bool, centre: str, signal: float, w: tuple[float, float]) -> dict:
    cov = COVARIATES[centre]
    age = float(np.clip(rng.normal(*_mix(cov["age"], abnormal, signal, w)), 33, 91))
    male = bool(rng.random() < float(_mix(cov["male"], abnormal, signal, w)))
    height = rng.normal(*_mix(cov["height_cm"], abnormal, signal, w)) + (6.0 if male else -1.0)
    weight = rng.normal(*_mix(cov["weight_kg"], abnormal, signal, w)) + (5.0 if male else -0.8)
    height = round(float(np.clip(height, 140, 190)), 1)
    weight = round(float(np.clip(weight, 38, 100)), 1)
    return {"age": round(age, 1), "sex": "M" if male else "F", "height_cm": height,
            "weight_kg": weight, "bmi": round(weight / (height / 100) ** 2, 2)}


def _phantom(rng: np.random.Generator, *, ff: np.ndarray, rarefaction: np.ndarray,
             height_cm: float, centre_slice: int) -> dict:
    """Tissue maps of one patient: bodies (per level), cortex, discs, canal, marrow texture."""
    grids = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    scale = height_cm / 160.0
    half_si = 9.6 * scale + rng.normal(0, 0.3)
    half_ap = 12.5 * np.sqrt(scale) + rng.normal(0, 0.3)
    pitch = 26.5 * scale
    top = 14.0 + rng.normal(0, 1.0)
    ap_c = 22.0 + rng.normal(0, 0.8)
    lordosis = rng.normal(0.10, 0.03)  # AP drift per row: the lumbar curve
    bodies, cortex_all = [], np.zeros(SHAPE, bool)
    for lev in range(4):
        si_c = top + half_si + lev * pitch
        c = (centre_slice, si_c, ap_c + lordosis * (si_c - 60.0))
        size = (5.6, half_si * (1 + rng.normal(0, 0.03)), half_ap * (1 + rng.normal(0, 0.03)))
        body = rounded_box(SHAPE, c, size, power=4.0)
        inner = np.zeros_like(body)
        for k in range(SHAPE[0]):  # cortex = one-voxel in-plane shell
            inner[k] = ndimage.binary_erosion(body[k])
        bodies.append((body, inner))
        cortex_all |= body & ~inner
    any_body = np.any([b for b, _ in bodies], axis=0)
    ap_line = ap_c + lordosis * (grids[1] - 60.0)
    column = (np.abs(grids[2] - ap_line) <= half_ap) & (np.abs(grids[0] - centre_slice) <= 5)
    disc = column & ~any_body & (grids[1] > top - 4) & (grids[1] < top + 4 * pitch + 2)
    canal = (np.abs(grids[2] - (ap_line + half_ap + 5.5)) < 3.0) & np.ones(SHAPE, bool)
    # marrow texture: fine trabecular pattern + fatty islands, coarser with rarefaction
    fine = smooth_noise(SHAPE, (0.4, 0.7, 0.7), rng)
    coarse = smooth_noise(SHAPE, (0.8, 1.8, 1.8), rng)
    return {"bodies": bodies, "cortex": cortex_all, "disc": disc & ~cortex_all,
            "canal": canal & ~column, "fine": fine, "coarse": coarse,
            "soft": smooth_noise(SHAPE, (1.0, 6.0, 6.0), rng)}


def _render(ph: dict, seq: str, ff: np.ndarray, rarefaction: np.ndarray,
            rng: np.random.Generator, scanner: tuple | None) -> np.ndarray:
    t = TISSUE[seq]
    img = t["soft"] * (1.0 + 0.12 * ph["soft"])
    img = np.where(ph["canal"], t["csf"], img)
    img = np.where(ph["disc"], t["disc"] * (1 + rng.normal(0, 0.08)), img)
    a, b = t["marrow"]
    for lev, (_body, inner) in enumerate(ph["bodies"]):
        f, r = float(ff[lev]), float(rarefaction[lev])
        islands = ph["coarse"] > (1.1 - 0.55 * r)  # more/larger fatty islands with rarefaction
        marrow = (a + b * f) * (1.0 + (0.05 + 0.05 * r) * ph["fine"]) \
            + islands * b * (0.10 + 0.08 * r)
        img = np.where(inner, marrow, img)
    img = np.where(ph["cortex"], t["cortex"], img)
    noise = t["noise"]
    noise_factor = 1.0
    if scanner is not None:
        gain, offset, gamma, noise_factor, bias = scanner
        ramp = np.linspace(-1, 1, SHAPE[1])[None, :, None] * rng.uniform(0.5, 1.0)
        field = np.exp(bias * (ramp + 0.6 * smooth_noise(SHAPE, (2.0, 25.0, 25.0), rng)))
        img = (gain * np.clip(img, 1.0, None) ** gamma + offset) * field
        noise = noise * gain * (t["marrow"][0] + 0.4 * t["marrow"][1]) ** (gamma - 1.0)
    img = img + rng.normal(0, noise * noise_factor, SHAPE)
    return np.clip(img, 0, None).astype(np.float32)


def _patient(seed: int, centre: str, i: int, abnormal: bool, signal: float,
             weights: tuple[float, float]) -> tuple[dict, dict, np.random.Generator]:
    """One patient's covariates, DXA scores and latent marrow state, and the patient's generator
    (which :func:`generate` goes on drawing the phantom from)."""
    rng = rng_for(seed, "patient", centre, i)
    case = _covariates(rng, abnormal, centre, signal, weights)
    t, z = _dxa(rng, abnormal, case["age"])
    reference = "T" if case["age"] >= AGE_CUTOFF else "Z"
    outcome = int((t if reference == "T" else z) < (-1.0 if reference == "T" else -2.0))
    assert outcome == int(abnormal)
    case.update({"t_score": t, "z_score": z, "outcome": outcome})
    # latent marrow state driven by the bone deficit (scaled by signal) and by age
    deficit = float(np.clip(-(t + 1.0), -2.5, 3.5))
    ff0 = 0.40 + 0.002 * (case["age"] - 62.0) + signal * 0.032 * deficit + rng.normal(0, 0.045)
    ff = np.clip(ff0 + rng.normal(0, 0.02, 4), 0.12, 0.85)
    rare0 = np.clip(0.5 + signal * 0.15 * deficit + rng.normal(0, 0.30), 0.0, 1.5)
    rare = np.clip(rare0 + rng.normal(0, 0.1, 4), 0.0, 1.5)
    return case, {"deficit": deficit, "ff0": float(ff0), "ff": ff, "rare0": float(rare0),
                  "rare": rare}, rng


def _cohort_order(seed: int, size: str, options: dict) -> list[tuple[str, str, np.ndarray,
                                                                     tuple[float, float]]]:
    """Per centre: (centre, site, class flag of every patient in id order, class weights)."""
    (ia, inn), (ea, en) = SIZES[size]
    ia = int(options.get("n_abnormal", ia))
    inn = int(options.get("n_normal", inn))
    ea = int(options.get("n_external_abnormal", ea))
    en = int(options.get("n_external_normal", en))
    out = []
    for centre, site, n_abn, n_norm in (("internal", "A", ia, inn), ("external", "B", ea, en)):
        order = rng_for(seed, "order", centre).permutation(n_abn + n_norm)
        flags = np.r_[np.ones(n_abn, bool), np.zeros(n_norm, bool)][order]
        out.append((centre, site, flags, (n_norm / (n_abn + n_norm), n_abn / (n_abn + n_norm))))
    return out


def latent_state(*, size: str = "paper", seed: int = 0, signal: float = 1.0,
                 **options) -> pd.DataFrame:
    """The simulated cohort's ground truth that no table holds: each patient's latent marrow
    state, replayed from the same generators :func:`generate` draws it from (no image is made).

    Columns ``patient_id, centre, outcome, age, t_score, z_score, deficit`` (``-(T + 1)``,
    clipped), ``fat_fraction`` and ``rarefaction`` (the patient-level ``ff0`` and ``rare0`` that
    drive the marrow intensity and texture of every vertebra), ``fat_fraction_l1_l4`` and
    ``rarefaction_l1_l4`` (means of the per-vertebra values). For diagnosing a split: whether a
    test set's patients differ from the training patients in what the images show
    (``benchmarks/split_latent.py``).

    Examples
    --------
    >>> s = latent_state(size="smoke", seed=0)
    >>> len(s), int(s.outcome.sum()), s.patient_id.iloc[0]
    (56, 30, 'OP001')
    """
    rows = []
    for centre, _site, flags, weights in _cohort_order(seed, size, options):
        for i, abnormal in enumerate(flags):
            case, lat, _ = _patient(seed, centre, i, abnormal, signal, weights)
            rows.append({"patient_id": f"{'OP' if centre == 'internal' else 'EX'}{i + 1:03d}",
                         "centre": centre, "outcome": case["outcome"], "age": case["age"],
                         "t_score": case["t_score"], "z_score": case["z_score"],
                         "deficit": lat["deficit"], "fat_fraction": lat["ff0"],
                         "rarefaction": lat["rare0"],
                         "fat_fraction_l1_l4": float(np.mean(lat["ff"])),
                         "rarefaction_l1_l4": float(np.mean(lat["rare"]))})
    return pd.DataFrame(rows)


def generate(out: Path, *, size: str, seed: int, signal: float, request: dict,
             **options) -> Path:
    """Write the osteoporosis cohort (see module docstring).

    Options: ``n_abnormal``, ``n_normal`` (internal), ``n_external_abnormal``,
    ``n_external_normal``.
    """
    w = CohortWriter(out, "osteoporosis", request)
    groups = _cohort_order(seed, size, options)
    for centre, site, flags, weights in groups:
        for i, abnormal in enumerate(flags):
            pid = f"{'OP' if centre == 'internal' else 'EX'}{i + 1:03d}"
            case, latent, rng = _patient(seed, centre, i, abnormal, signal, weights)
            case = {"patient_id": pid, **case,
                    "split": "external" if centre == "external" else "",
                    "center": site, "scanner": "scanner B" if site == "B" else "scanner A"}
            ff, rare = latent["ff"], latent["rare"]
            centre_slice = int(SHAPE[0] // 2 + rng.choice([-1, 0, 0, 1]))
            ph = _phantom(rng, ff=ff, rarefaction=rare, height_cm=case["height_cm"],
                          centre_slice=centre_slice)
            for seq in ("T1", "T2"):
                scanner = SCANNER_B[seq] if site == "B" else None
                arr = _render(ph, seq, ff, rare, rng_for(seed, "render", centre, i, seq), scanner)
                img = to_image(arr, SPACING, (0.0, 0.0, 0.0), SAGITTAL_DIRECTION)
                ip = w.image(img, f"images/{pid}_{seq}.nii.gz")
                masks = {1: np.zeros(SHAPE, np.uint8), 2: np.zeros(SHAPE, np.uint8)}
                jit = rng_for(seed, "reader2", centre, i, seq)
                for lev, (_, inner) in enumerate(ph["bodies"]):
                    for k in (centre_slice - 1, centre_slice, centre_slice + 1):
                        sl = inner[k]
                        masks[1][k][sl] = lev + 1
                        other = perturb_mask(sl, jit, jitter=0.35, sigma=1.5)
                        masks[2][k][other & (masks[2][k] == 0)] = lev + 1
                for reader, m in masks.items():
                    mk = to_image(m, SPACING, (0.0, 0.0, 0.0), SAGITTAL_DIRECTION)
                    mp = w.image(mk, f"masks/{pid}_{seq}_reader{reader}.nii.gz")
                    for lev, name in enumerate(LEVELS):
                        w.rois.append({"patient_id": pid, "roi": name, "sequence": seq,
                                       "reader": reader, "image": ip, "mask": mp,
                                       "label": lev + 1})
            w.cases.append(case)
    return w.finish({"sizes": {c: {"abnormal": int(f.sum()), "normal": int((~f).sum())}
                               for c, _s, f, _w in groups},
                     "outcome_rule": "T-score < -1 (age >= 50) or Z-score < -2 (age < 50)",
                     "array_axes": "sagittal slice, superior->inferior, anterior->posterior"})
