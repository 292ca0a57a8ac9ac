"""Simulated cohort for seed 004: osteolytic vs osteoblastic spinal metastases on T1W/T2W/FS-T2W.

Each lesion has a latent *mineralisation* ``m`` (osteoblastic lesions higher, osteolytic lower,
overlapping normal distributions whose separation scales with ``signal``). ``m`` drives

* the lesion signal on each sequence: sclerotic (blastic) lesions are dark on T1W, T2W and
  FS-T2W; lytic lesions are iso/dark on T1W and bright on T2W and FS-T2W (seed 004 table 3);
* lesion texture (lytic lesions more heterogeneous) and a soft-tissue mass extending beyond the
  vertebral body (more frequent in lytic lesions: 90% vs 46% in the paper);
* the CT metastasis-to-normal-vertebra HU ratio ``mvr`` (> 1 blastic, < 1 lytic).

The radiologist's semantic reads (SI low/iso/high relative to the spinal cord, soft-tissue mass,
severe compression fracture) are derived from the same latent values plus reading noise, so
their class-conditional prevalences resemble table 3 at ``signal=1`` and carry no class
information at ``signal=0``. Primary tumours and locations follow table 2 (pooled when
``signal=0``). One sagittal slab per sequence, 1 × 1 mm in plane, 3 mm slices; the lesion ROI is
delineated separately on each sequence (slightly different outlines).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vcfnb.synth._phantom import (SAGITTAL_DIRECTION, CohortWriter, perturb_mask, rng_for,
                                  rounded_box, smooth_noise, to_image)

SIZES = {"paper": (26, 52), "smoke": (12, 24)}  # (osteoblastic, osteolytic)
SHAPE = (7, 48, 48)  # sagittal slices, superior-inferior rows, anterior-posterior columns
SPACING = (1.0, 1.0, 3.0)  # (AP, SI, slice) mm, SimpleITK order

# seed 004 table 2 (counts: blastic, lytic)
PRIMARY = {
    "lung cancer": (8, 16), "renal carcinoma": (0, 11), "breast carcinoma": (5, 3),
    "prostate carcinoma": (5, 2), "cancer of unknown primary": (5, 2),
    "thyroid carcinoma": (1, 6), "colorectal carcinoma": (2, 3),
    "hepatocellular carcinoma": (0, 5), "cholangiocellular carcinoma": (0, 2),
    "rhabdomyosarcoma": (0, 1), "leiomyosarcoma of uterus": (0, 1),
}
LOCATION = {"cervical": (3, 22), "thoracic": (9, 13), "lumbar": (14, 14), "sacral": (0, 3)}

# tissue intensities (arbitrary MR units): marrow, cord (the semantic reference), soft tissue
TISSUE = {
    "T1": {"marrow": 620.0, "cord": 420.0, "soft": 300.0, "disc": 330.0},
    "T2": {"marrow": 430.0, "cord": 430.0, "soft": 250.0, "disc": 620.0},
    "FS-T2": {"marrow": 180.0, "cord": 380.0, "soft": 160.0, "disc": 560.0},
}
# lesion signal = cord level + slope * (-m) + reading-independent noise
LESION = {"T1": (385.0, 70.0), "T2": (480.0, 150.0), "FS-T2": (520.0, 150.0)}


def _category(rng, blastic: bool, table: dict, signal: float) -> str:
    names = list(table)
    counts = np.array([table[n] for n in names], float)
    pooled = counts.sum(1) / counts.sum()
    own = counts[:, 0 if blastic else 1] / counts[:, 0 if blastic else 1].sum()
    w = min(signal, 1.0)
    p = w * own + (1 - w) * pooled
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _read_si(value: float, cord: float, rng, iso_band: float, allow_iso: bool = True) -> str:
    v = value + rng.normal(0, 25.0)
    if allow_iso and abs(v - cord) < iso_band:
        return "iso"
    return "high" if v > cord else "low"


def generate(out: Path, *, size: str, seed: int, signal: float, request: dict,
             **options) -> Path:
    """Write the metastasis cohort (see module docstring); options: ``n_blastic``, ``n_lytic``."""
    n_blastic, n_lytic = SIZES[size]
    n_blastic = int(options.get("n_blastic", n_blastic))
    n_lytic = int(options.get("n_lytic", n_lytic))
    w = CohortWriter(out, "metastasis", request)
    order = rng_for(seed, "order").permutation(n_blastic + n_lytic)
    blastic_flags = np.r_[np.ones(n_blastic, bool), np.zeros(n_lytic, bool)][order]
    for i, blastic in enumerate(blastic_flags):
        pid = f"M{i + 1:03d}"
        rng = rng_for(seed, "lesion", i)
        # latent mineralisation: blastic +, lytic -, unit SD, separation scaled by signal
        m = rng.normal((0.95 if blastic else -0.45) * signal, 1.0)
        mass_p = 1.0 / (1.0 + np.exp(-(0.9 - 1.6 * m * min(signal, 1.0) - 0.0)))
        mass = bool(rng.random() < (mass_p if signal > 0 else 0.77))
        severe = bool(rng.random() < 0.40)
        age = float(np.clip(rng.normal(59.2, 10.6), 39, 84))
        sex = "M" if rng.random() < 51 / 78 else "F"

        # geometry: vertebral body, disc bands, lesion blob, optional soft-tissue mass
        body_c = (SHAPE[0] / 2 - 0.5, SHAPE[1] / 2 + rng.normal(0, 1), SHAPE[2] / 2 + 2)
        height = 12.0 * (0.55 if severe else 1.0) + rng.normal(0, 0.5)
        body = rounded_box(SHAPE, body_c, (4.5, height, 13.0))
        grids = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
        disc = (np.abs(grids[1] - (body_c[1] - height - 3)) < 2.5) | \
               (np.abs(grids[1] - (body_c[1] + height + 3)) < 2.5)
        disc = disc & (np.abs(grids[2] - body_c[2]) < 12) & np.ones(SHAPE, bool)
        cord = (np.abs(grids[2] - (body_c[2] + 17)) < 3) & np.ones(SHAPE, bool)
        lc = (body_c[0] + rng.integers(-1, 2), body_c[1] + rng.normal(0, 2),
              body_c[2] + rng.normal(0, 2.5))
        radii = (1.6, rng.uniform(4.5, 8.0) * (0.7 if severe else 1.0), rng.uniform(5.0, 9.0))
        blob = rounded_box(SHAPE, lc, radii, power=2.0)
        blob &= smooth_noise(SHAPE, (0.6, 2.0, 2.0), rng) > -1.2  # irregular outline
        lesion = blob & body
        if mass:  # tumour breaking through the anterior cortex into soft tissue
            ext = rounded_box(SHAPE, (lc[0], lc[1], body_c[2] - 13.5), (1.6, radii[1] * 0.8, 4.0),
                              power=2.0)
            lesion |= ext & ~disc
        if lesion.sum() < 30:
            lesion = rounded_box(SHAPE, body_c, (1.6, 5, 5), power=2.0)

        heterogeneity = 0.10 + 0.08 * np.tanh(-m * min(signal, 1.0) if signal > 0 else
                                              rng.normal(0, 1))
        tex = smooth_noise(SHAPE, (0.5, 1.0, 1.0), rng)
        case = {"patient_id": pid, "lesion_type": "osteoblastic" if blastic else "osteolytic",
                "outcome": int(blastic), "age": round(age, 1), "sex": sex,
                "primary_tumor": _category(rng, blastic, PRIMARY, signal),
                "location": _category(rng, blastic, LOCATION, signal),
                "soft_tissue_mass": int(mass), "severe_compression": int(severe),
                "mvr": round(float(np.exp(0.55 * m + rng.normal(0, 0.18))), 4)}
        for seq, tissue in TISSUE.items():
            base, slope = LESION[seq]
            lesion_mean = base + slope * (-m) + rng.normal(0, 30.0)
            img = np.full(SHAPE, tissue["soft"], np.float32)
            img[body] = tissue["marrow"]
            img[disc] = tissue["disc"]
            img[cord] = tissue["cord"]
            img[lesion] = lesion_mean
            img += (tex * heterogeneity * np.maximum(img, 50.0)).astype(np.float32)
            img += rng.normal(0, 12.0, SHAPE).astype(np.float32)  # thermal noise
            img = np.clip(img, 0, None).astype(np.float32)
            origin = (0.0, 0.0, 0.0)
            im = to_image(img, SPACING, origin, SAGITTAL_DIRECTION)
            roi = perturb_mask(lesion, rng_for(seed, "roi", i, seq), jitter=0.3) & \
                (img > 0)
            if roi.sum() < 30:
                roi = lesion
            mk = to_image(roi.astype(np.uint8), SPACING, origin, SAGITTAL_DIRECTION)
            key = seq.replace("-", "")
            ip = w.image(im, f"images/{pid}_{key}.nii.gz")
            mp = w.image(mk, f"masks/{pid}_{key}_lesion.nii.gz")
            w.rois.append({"patient_id": pid, "roi": "lesion", "sequence": seq, "reader": 1,
                           "image": ip, "mask": mp, "label": 1})
            case[f"si_{key.lower()}"] = _read_si(lesion_mean, tissue["cord"], rng,
                                                 iso_band=40.0, allow_iso=(seq != "FS-T2"))
        w.cases.append(case)
    return w.finish({"positive_class_in_outcome": "osteoblastic",
                     "sizes": {"osteoblastic": n_blastic, "osteolytic": n_lytic}})
