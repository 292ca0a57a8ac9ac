"""Simulated cohorts, one generator per study, written in exactly the cohort contract.

``make_cohort(study, out_dir, size="smoke"|"paper", seed=0, signal=1.0)`` writes ``cases.csv``,
``rois.csv``, the image/mask files, ``cohort.json`` (``"simulated": true``) and a README line saying
the data are simulated. ``signal=0`` removes every class effect (a negative control); 1.0 gives
the default, overlapping effect sizes (a sensible radiomics model lands in roughly the papers'
test AUC range, not at 1.0). Generation is deterministic from ``seed``.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

STUDIES = {
    "vcf": "vcfnb.synth.vcf",
    "osteoporosis": "vcfnb.synth.osteoporosis",
    "ovf": "vcfnb.synth.ovf",
    "metastasis": "vcfnb.synth.metastasis",
}
SIZES = ("smoke", "paper")

__all__ = ["make_cohort", "STUDIES", "SIZES"]


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
    if done.is_file() and not overwrite:
        meta = json.loads(done.read_text(encoding="utf-8"))
        if meta.get("request") == request and (out / "rois.csv").is_file():
            return out
    module = importlib.import_module(STUDIES[study])
    return module.generate(out, size=size, seed=int(seed), signal=float(signal),
                           request=request, **options)
