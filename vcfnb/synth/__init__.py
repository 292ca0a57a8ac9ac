"""Simulated cohorts, one generator per study, written in exactly the cohort contract.

``make_cohort(study, out_dir, size="smoke"|"paper", seed=0, signal=1.0)`` writes ``cases.csv``,
``rois.csv``, the image/mask files, ``cohort.json`` (``"simulated": true``) and a README line saying
the data are simulated. ``signal=0`` removes every class effect (a negative control); 1.0 gives
the default, overlapping effect sizes (a sensible radiomics model lands in roughly the papers'
test AUC range, not at 1.0). Generation is deterministic from ``seed``.

:func:`perturb_mask` (a simulated second reader's outline) is public: the generators and
:func:`vcfnb.sources.perturbed_reader` (real scans with a simulated second reader) share it.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

STUDIES = {
    "vcf": "vcfnb.synth.vcf",
    "osteoporosis": "vcfnb.synth.osteoporosis",
    "ovf": "vcfnb.synth.ovf",
    "metastasis": "vcfnb.synth.metastasis",
}
SIZES = ("smoke", "paper")

__all__ = ["make_cohort", "perturb_mask", "STUDIES", "SIZES"]


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, *, jitter: float = 0.25,
                 sigma: float = 1.5) -> np.ndarray:
    """A second reader's version of a binary mask: smooth random boundary shift.

    The boundary moves in or out by about ``jitter`` of a voxel on average: a zero-mean,
    unit-SD Gaussian field (white noise smoothed by ``sigma`` voxels) thresholds the signed
    distance to the boundary, the way two readers' outlines differ. The result is never empty.
    Deterministic for a given ``rng`` state (it draws ``mask.size`` standard normals).

    >>> m = np.zeros((1, 12, 12), bool); m[0, 3:9, 3:9] = True
    >>> r = perturb_mask(m, np.random.default_rng(0), jitter=0.5)
    >>> r.shape == m.shape and bool(r.any()) and bool((r != m).any())
    True
    """
    m = np.asarray(mask, bool)
    if not m.any():
        return m.copy()
    inside = ndimage.distance_transform_edt(m)
    outside = ndimage.distance_transform_edt(~m)
    signed = np.where(m, inside - 0.5, -(outside - 0.5))
    field = rng.standard_normal(m.shape)
    if not np.all(np.asarray(sigma) == 0):
        field = ndimage.gaussian_filter(field, sigma, mode="reflect")
        sd = field.std()
        field = (field - field.mean()) / (sd if sd > 0 else 1.0)
    out = signed + field * jitter * 2.0 > 0
    return out if out.any() else m.copy()


def make_cohort(study: str, out_dir, *, size: str = "smoke", seed: int = 0,
                signal: float = 1.0, overwrite: bool = False, **options) -> Path:
    """Generate the built-in simulated cohort of ``study`` into ``out_dir``.

    Parameters
    ----------
    study : {"vcf", "osteoporosis", "ovf", "metastasis"}
    out_dir : path
        Target folder. When it already holds a complete cohort generated with the same
        arguments it is reused as is (generation is deterministic), unless ``overwrite``.
    size : {"smoke", "paper"}
        ``paper`` = the paper's cohort sizes; ``smoke`` = a small cohort for tests.
    seed : int
        Master seed; the same seed gives byte-identical files.
    signal : float
        Scale of every class effect: 1.0 default, 0.0 none at all.
    **options
        Generator-specific options (see each study module's ``generate``).

    Returns
    -------
    Path
        The cohort folder.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {sorted(STUDIES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    if not 0.0 <= float(signal) <= 5.0:
        raise ValueError(f"signal must lie in [0, 5], got {signal}")
    out = Path(out_dir)
    request = {"study": study, "size": size, "seed": int(seed), "signal": float(signal),
               "options": {k: options[k] for k in sorted(options)}}
    done = out / "cohort.json"
    with _folder_lock(out):  # two runs asking for the same cohort: one generates, one reuses
        if done.is_file() and not overwrite:
            meta = json.loads(done.read_text(encoding="utf-8"))
            if meta.get("request") == request and (out / "rois.csv").is_file():
                return out
        module = importlib.import_module(STUDIES[study])
        return module.generate(out, size=size, seed=int(seed), signal=float(signal),
                               request=request, **options)


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` (created if needed) for the block: concurrent
    :func:`make_cohort` calls for one folder (parallel runner lanes, two notebooks) take turns
    instead of writing the same files at once. An advisory ``flock`` on the folder itself, so
    no lock file is left behind; released when the process dies. Without ``fcntl`` (Windows)
    the block runs unlocked."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
