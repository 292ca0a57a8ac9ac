"""vcfnb: literate, leakage-free spine radiomics studies.

Submodules are imported lazily so that ``import vcfnb as vc`` stays fast and
does not pull in torch or matplotlib until a notebook needs them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "io", "synth", "preprocess", "morphometry", "filters", "features", "reliability",
    "selection", "models", "stats", "plots", "report", "deep", "runner", "studies",
    "conformance", "plots_deep", "harmonize", "sources", "dicom_masks", "builders",
    "parallel", "bundle", "modelcard", "montage", "recovery", "contract",
)
__all__ = ["__version__", *_SUBMODULES]  # noqa: PLE0604 - names of lazily imported modules


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"vcfnb.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'vcfnb' has no attribute {name!r}")
